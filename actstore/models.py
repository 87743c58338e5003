"""One resolver from a model name to a loaded model and tokenizer.

Names: an alias from manifests/models.json (``smollm2-135m``, the bundled GGUF;
``tiny-random``, built in code for tests), a local directory or ``.gguf`` file, or a Hugging
Face hub id already in the local cache. Nothing here reaches the network when
``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from actstore.errors import UserError
from actstore.paths import default_model_cache
from manifests import model_aliases


@dataclass
class LoadedModel:
    model: "torch.nn.Module"  # a transformers causal LM (LLaMA family)
    tokenizer: object
    name: str  # what the user asked for
    model_id: str  # canonical identity recorded in stores and probes

    @property
    def n_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size


def load_model(name: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> LoadedModel:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    aliases = model_aliases()
    if name in aliases:
        spec = aliases[name]
        if spec.get("builtin"):
            loaded = tiny_random_llama()
        else:
            loaded = _load_packaged_gguf(name, spec)
    else:
        loaded = _load_path_or_hub(name, aliases)
    _ensure_pad_token(loaded.tokenizer)
    loaded.model.to(device=device, dtype=dtype).eval()
    return loaded


def tiny_random_llama(seed: int = 0, n_layers: int = 4, hidden_size: int = 64, n_heads: int = 4) -> LoadedModel:
    """A tiny randomly initialised LlamaForCausalLM with a byte-level tokenizer, built offline."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2),
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.name_or_path = "tiny-random"
    return LoadedModel(model, tokenizer, "tiny-random", f"tiny-random(seed={seed})")


def byte_tokenizer():
    """Every UTF-8 byte is one token, plus <s>, </s> and <pad>: deterministic and offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", model_max_length=1024
    )


def _load_packaged_gguf(name: str, spec: dict) -> LoadedModel:
    """A GGUF shipped in a pip package; dequantized once, then cached as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise UserError(f"model {name!r} needs the package {spec['package']}: run `{spec['install']}`")
    package_dir = Path(list(found.submodule_search_locations)[0])
    gguf_path = package_dir / spec["gguf_file"]
    if not gguf_path.is_file():
        raise UserError(f"{gguf_path}: bundled model file missing; reinstall with `{spec['install']}`")
    model_id = f"{name}:{spec['gguf_file']}"
    cache = default_model_cache() / name
    if not (cache / "complete").is_file():
        _convert_gguf(package_dir, spec["gguf_file"], cache)
    model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(cache)
    return LoadedModel(model, tokenizer, name, model_id)


def _convert_gguf(package_dir: Path, gguf_file: str, cache: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=gguf_file, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; rebuild a plain one from its weights.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict())
    staging = cache.with_name(cache.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "complete").write_text("converted from " + gguf_file + "\n")
    shutil.rmtree(cache, ignore_errors=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, cache)


def _load_path_or_hub(name: str, aliases: dict) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name).expanduser()
    kwargs: dict = {}
    if path.is_file() and path.suffix == ".gguf":
        source, kwargs = path.parent, {"gguf_file": path.name}
    elif path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: not a model: a local model is a directory holding config.json "
                            "(Hugging Face format) or a .gguf file")
        source = path
    else:
        source = name
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            kwargs["local_files_only"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, TypeError) as err:  # TypeError: a config.json that is not a config
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if path.exists():
            raise UserError(f"{path}: cannot load a model from it ({reason})") from None
        raise UserError(
            f"cannot resolve model {name!r}: not an alias ({', '.join(aliases)}), not a local path, "
            f"and not loadable from the local Hugging Face cache ({reason})"
        ) from None
    model_id = str(path.resolve()) if path.exists() else name
    revision = getattr(model.config, "_commit_hash", None)
    if revision:
        model_id += f"@{revision}"
    return LoadedModel(model, tokenizer, name, model_id)


def _ensure_pad_token(tokenizer) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
