"""Saving and loading trained reward models: safetensors and JSON only, never pickles.

A run directory holds ``finetune.json`` (format, base model, adapter settings, training config
and losses), ``adapter/`` (peft ``save_pretrained``: ``adapter_config.json`` plus
``adapter_model.safetensors``) and ``head.safetensors`` (the scalar head's weight), sealed by
``complete.json`` (common/atomic.py): a run directory is replaced whole or not at all, and one
whose files do not match its seal is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common.atomic import atomic_directory, verify_directory
from actstore.engine.capture import DecoderParts
from common import UserError, read_json
from finetune.reward_model import AdapterSettings, RewardModel, quiet_peft

FORMAT = 1
RECORD_FILE = "finetune.json"
HEAD_FILE = "head.safetensors"
ADAPTER_DIR = "adapter"


@dataclass
class LoadedRewardModel:
    model: RewardModel
    tokenizer: object
    record: dict  # the contents of finetune.json

    @property
    def settings(self) -> AdapterSettings:
        return self.model.settings


def save_reward_model(directory: Path, reward_model: RewardModel, record: dict, *, seal: dict | None = None) -> Path:
    """Write the adapter, the head and ``record`` (plus format and settings) into ``directory``,
    replacing what is there in one step; ``seal`` goes into the completion marker."""
    from safetensors.torch import save_file

    directory = Path(directory)
    full = {"format": FORMAT, **record, "settings": reward_model.settings.as_dict()}
    with atomic_directory(directory, seal) as staging:
        # The embeddings are never trained here; saying so spares peft a look for the base model's files.
        reward_model.peft_model.save_pretrained(
            str(staging / ADAPTER_DIR), safe_serialization=True, save_embedding_layers=False
        )
        save_file({"weight": reward_model.head.weight.detach().float().cpu().contiguous()}, str(staging / HEAD_FILE))
        (staging / RECORD_FILE).write_text(json.dumps(full, indent=1) + "\n")
    return directory


def read_record(directory: Path) -> dict:
    directory = Path(directory)
    path = directory / RECORD_FILE
    if not path.is_file():
        raise UserError(f"{directory}: not a finetune run directory (no {RECORD_FILE}; train one with `finetune train`)")
    verify_directory(directory)
    record = read_json(path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UserError(f"{path}: unsupported run format {record.get('format') if isinstance(record, dict) else None!r} (expected {FORMAT})")
    for key in ("model", "model_id", "settings"):
        if key not in record:
            raise UserError(f"{path}: missing field {key!r}")
    return record


def base_model_spec(record: dict, *, device: str | torch.device | None = None, device_map: str | None = None,
                    max_memory: str | None = None, offload_dir: str | None = None,
                    attention: str = "auto") -> "ModelSpec":
    """The base model as it was trained: its name, its training dtype (bfloat16 under bf16) and its
    quantization, placed as asked (default: this process's device)."""
    from actstore.models import ModelSpec

    trained = record.get("config", {})
    dtype = "bfloat16" if record.get("result", {}).get("precision") == "bf16" else "float32"
    return ModelSpec.requested(record["model"], compute_dtype=dtype,
                               fallback_device=str(device) if device else None, device_map=device_map,
                               max_memory=max_memory, offload_dir=offload_dir,
                               quantization=trained.get("quantize", "none"), attention=attention)


def load_reward_model(directory: Path, *, device: str | torch.device | None = None, spec=None,
                      loaded=None) -> LoadedRewardModel:
    """Rebuild a saved reward model on its base model (loaded by name, checked by identity): ``loaded``
    when given (its adapter is put in place; ``unload_adapter`` takes it out), else ``spec``, else
    ``base_model_spec`` on ``device``."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from actstore.models import model_fingerprint
    from finetune.devices import check_adapter_placement

    directory = Path(directory)
    record = read_record(directory)
    settings = AdapterSettings.from_dict(record["settings"])
    loaded = loaded or (spec or base_model_spec(record, device=device)).load()
    check_adapter_placement(loaded)
    if loaded.model_id != record["model_id"]:
        raise UserError(
            f"{directory}: trained on {record['model_id']!r}, but {record['model']!r} now resolves to {loaded.model_id!r}"
        )
    if record.get("model_fingerprint") and model_fingerprint(record["model"]) != record["model_fingerprint"]:
        raise UserError(f"{directory}: trained on {record['model']!r} as it was; its weights have changed since "
                        "(another checkpoint at that path, or files replaced): train again")
    for required in (directory / ADAPTER_DIR / "adapter_config.json", directory / HEAD_FILE):
        if not required.is_file():
            raise UserError(f"{directory}: incomplete run directory, {required.name} is missing")
    with quiet_peft():
        peft_model = PeftModel.from_pretrained(loaded.model, str(directory / ADAPTER_DIR), is_trainable=False)
    weight = load_file(str(directory / HEAD_FILE))["weight"]
    hidden = loaded.model.config.hidden_size
    if tuple(weight.shape) != (1, hidden):
        raise UserError(f"{directory / HEAD_FILE}: head shape {tuple(weight.shape)} does not fit hidden size {hidden}")
    head = nn.Linear(hidden, 1, bias=False)
    with torch.no_grad():
        head.weight.copy_(weight)
    head.to(device=DecoderParts.of(loaded.model).output_device)
    model = RewardModel(peft_model, head, settings).eval()
    return LoadedRewardModel(model, loaded.tokenizer, record)


def unload_adapter(trained: LoadedRewardModel) -> None:
    """Take the adapter out of the base model again (for a base model shared with other work)."""
    if trained.settings.method == "lora":
        with quiet_peft():
            trained.model.peft_model.unload()
