"""One loader: a model specification to a loaded model and tokenizer.

Names: an alias from common/model_aliases.json (``smollm2-135m``, the bundled GGUF;
``tiny-random``, built in code for tests), a local directory or ``.gguf`` file, or a Hugging
Face hub id already in the local cache. Nothing here reaches the network when
``HF_HUB_OFFLINE=1``.

Weights are loaded straight into the compute dtype onto their devices (transformers'
``dtype=`` and ``device_map=``, safetensors memory-mapped): no float32 copy of the model is
ever made on the host. The specification itself (devices,
placement, dtype, quantization) is actstore/models/spec.py.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError

from common import UserError, default_model_cache, describe
from common.model_names import model_aliases
from actstore.models.attention import set_attention
from actstore.models.compute_dtype import torch_dtype
from actstore.models.devices import device_choice
from actstore.models.families import family_of
from actstore.models.gguf_cache import gguf_cache, packaged_cache
from actstore.models.quantization import check_quantization, quantization_config
from actstore.models.quiet import transformers_errors_only
from actstore.models.spec import LoadedModel, ModelSpec
from actstore.models.tiny import TINY_RANDOM_BLOCKS, byte_tokenizer, tiny_random_llama

DEFAULT_MODEL = "smollm2-135m"  # the bundled model (an alias of common/model_aliases.json)
# What a model file that cannot be read raises: a config.json that is not a config (TypeError), a truncated
# safetensors (SafetensorError) or GGUF (struct.error, EOFError, ValueError) file, a missing file (OSError).
UNREADABLE = (OSError, ValueError, TypeError, SafetensorError, struct.error, EOFError)


class ModelOnDemand:
    """The model, loaded the first time something needs it and at most once (or one already loaded):
    the extractions, live trainings and live evaluations of one `genies run` share this one copy."""

    def __init__(self, spec: ModelSpec, loaded: LoadedModel | None = None, log: Callable[[str], None] | None = None):
        self.spec, self._loaded, self.log, self.load_count = spec, loaded, log, 0

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    def get(self) -> LoadedModel:
        if self._loaded is None:
            if self.log:
                where = self.spec.device_map if self.spec.placed else device_choice(self.spec.device_map)
                self.log(f"loading model {self.spec.name} on {where} ({self.spec.compute_dtype})")
            self._loaded = load_model(self.spec)
            self.load_count += 1
            if self.log:
                self.log(f"attention: {self._loaded.attention} (--attention {self.spec.attention})")
        return self._loaded


def load_model(spec: ModelSpec | str) -> LoadedModel:
    """Load ``spec`` (a bare name: float32 on the host) in its compute dtype onto its devices."""
    from transformers.utils import logging as hf_logging

    spec = ModelSpec(spec) if isinstance(spec, str) else spec
    spec.check_devices()
    check_quantization(spec.quantization, spec.main_device)
    hf_logging.disable_progress_bar()
    aliases = model_aliases()
    check_family(spec.name, aliases)
    if _is_builtin(spec.name, aliases):
        loaded = _build_tiny(spec)
    elif spec.name in aliases:
        loaded = _load_packaged_gguf(spec, aliases[spec.name])
    else:
        loaded = _load_path_or_hub(spec, aliases)
    family_of(loaded.model.config, source=spec.name)
    set_attention(loaded.model, spec.name, spec.attention, spec.main_device, trains=spec.trains,
                  several_gpus=spec.several_gpus, tree_masks=spec.tree_masks)
    _ensure_pad_token(loaded.tokenizer)
    loaded.model.eval()
    loaded.spec = spec
    return loaded


def _is_builtin(name: str, aliases: dict | None = None) -> bool:
    return bool((aliases or model_aliases()).get(name, {}).get("builtin"))


def _build_tiny(spec: ModelSpec) -> "LoadedModel":
    if spec.placed or spec.quantization != "none":
        raise UserError(f"{spec.name} is built in code and loads on one device only, unquantized; save it with "
                        "save_pretrained and load the directory to try placements or quantization")
    loaded = tiny_random_llama()
    loaded.model.to(device=spec.device_map, dtype=torch_dtype(spec.compute_dtype))
    return loaded


def _load_packaged_gguf(spec: ModelSpec, alias: dict) -> LoadedModel:
    """A GGUF shipped in a pip package; dequantized once and cached as float32 safetensors, and
    cached once more per other compute dtype, so that a load maps its weights without a cast."""
    from transformers import AutoTokenizer

    cache = packaged_cache(spec, alias)
    model = _from_pretrained(cache, spec)
    tokenizer = AutoTokenizer.from_pretrained(cache)
    tokenizer.name_or_path = spec.name  # messages name the alias the user typed, not the cache directory
    return LoadedModel(model, tokenizer, spec.name, f"{spec.name}:{alias['gguf_file']}")


def _from_pretrained(source, spec: ModelSpec, **kwargs):
    """transformers' loader with the spec's dtype, placement and quantization: each tensor is read
    (memory-mapped) and cast on its own, straight onto its device."""
    from transformers import AutoModelForCausalLM

    placement: dict = {"device_map": spec.device_map}
    if spec.max_memory:
        placement["max_memory"] = {int(d) if d.isdigit() else d: size for d, size in spec.max_memory}
    if spec.offload_dir:
        placement["offload_folder"] = spec.offload_dir
    quantization = quantization_config(spec.quantization, torch_dtype(spec.compute_dtype))
    if quantization is not None:
        placement["quantization_config"] = quantization
    with transformers_errors_only():  # transformers' own load report would precede our one line
        model, report = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(spec.compute_dtype),
                                                             output_loading_info=True, **placement, **kwargs)
    check_loading_report(report, source)
    if quantization is None:
        _buffers_in_dtype(model, torch_dtype(spec.compute_dtype))
    return model


def check_loading_report(report: dict, source) -> None:
    """Refuse a checkpoint whose tensors do not match the model: a missing one would be randomly
    initialised, a mismatched one replaced, an unexpected one ignored (transformers only warns)."""
    problems = [(kind, sorted(report.get(key) or ())) for kind, key in
                (("missing", "missing_keys"), ("of the wrong shape", "mismatched_keys"), ("unexpected", "unexpected_keys"))]
    problems = [(kind, [str(name) for name in names]) for kind, names in problems if names]
    if problems:
        said = "; ".join(f"{len(names)} {kind} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                         for kind, names in problems)
        raise UserError(f"{source}: the checkpoint's tensors do not fit the model: {said}; it would load with "
                        "weights randomly initialised or ignored")


def _buffers_in_dtype(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Floating buffers (the rotary inverse frequencies) in the compute dtype, as ``model.to(dtype)`` left
    them before loads went straight into the dtype: activations stay bitwise those of stores made then."""
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != dtype and buffer.device.type != "meta":
                module._buffers[name] = buffer.to(dtype)


def _load_path_or_hub(spec: ModelSpec, aliases: dict) -> LoadedModel:
    from transformers import AutoTokenizer

    name = spec.name
    path = Path(name).expanduser()
    source, kwargs = _model_source(name)
    try:
        if "gguf_file" in kwargs:  # de-quantized once, then loaded from its cache like the bundled model
            source, kwargs = gguf_cache(path, spec.compute_dtype), {}
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = _from_pretrained(source, spec, **kwargs)
    except UNREADABLE as err:
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


def _model_source(name: str) -> tuple[Path | str, dict]:
    """Where transformers reads a local path or cached hub id from, and how (``from_pretrained``'s arguments)."""
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, {"gguf_file": path.name}
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: not a model: a local model is a directory holding config.json "
                            "(Hugging Face format) or a .gguf file")
        return path, {}
    return name, {"local_files_only": True} if os.environ.get("HF_HUB_OFFLINE") == "1" else {}


def check_family(name: str, aliases: dict | None = None) -> None:
    """Refuse a model whose family the toolkit does not support, from its config alone (no weights
    read), before any store or run directory is made. Names whose config cannot be read here (an
    alias, a missing path) are left to the loader, which checks the family again."""
    from transformers import AutoConfig

    if name in (aliases or model_aliases()):
        return
    source, kwargs = _model_source(name)
    try:
        with transformers_errors_only():
            config = AutoConfig.from_pretrained(source, **{"local_files_only": True, **kwargs})
    except (*UNREADABLE, KeyError):
        return
    family_of(config, source=name)


def load_tokenizer(name: str):
    """The model's tokenizer without its weights, for checks made before the model loads (a packaged
    alias is converted first if it never was: the load that follows needs that anyway)."""
    from transformers import AutoTokenizer

    aliases = model_aliases()
    if _is_builtin(name, aliases):
        return byte_tokenizer()
    if name in aliases:
        return AutoTokenizer.from_pretrained(packaged_cache(ModelSpec(name), aliases[name]))
    source, kwargs = _model_source(name)
    try:
        if "gguf_file" in kwargs:
            source, kwargs = gguf_cache(Path(name), "float32"), {}
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except UNREADABLE as err:
        raise UserError(f"{name}: cannot load its tokenizer ({describe(err)})") from None


def model_config(name: str):
    """The model's transformers config, read alone (no weights): an alias's converted copy, a local directory or
    GGUF file (its header), a cached hub id, or a named shape (actstore/models/shapes.py). None when no config
    can be read here (a packaged alias never converted, a hub id not in the cache)."""
    from transformers import AutoConfig

    from actstore.models.shapes import SHAPES, config_of

    aliases = model_aliases()
    if _is_builtin(name, aliases):
        return tiny_random_llama().model.config
    if name in SHAPES and not Path(name).expanduser().exists():
        return config_of(name)
    if name in aliases:
        source, kwargs = default_model_cache() / name, {}
        if not (source / "config.json").is_file():
            return None
    else:
        source, kwargs = _model_source(name)
    try:
        with transformers_errors_only():
            return AutoConfig.from_pretrained(source, **{"local_files_only": True, **kwargs})
    except (*UNREADABLE, KeyError, UserError):
        return None


def model_n_blocks(name: str) -> int | None:
    """The model's number of blocks (layers 0..n) from its config alone, no weights read; None when no config
    can be read here."""
    if _is_builtin(name):
        return TINY_RANDOM_BLOCKS
    config = model_config(name)
    if config is None:
        return None
    config = getattr(config, "text_config", None) or config
    found = getattr(config, "num_hidden_layers", None)
    return int(found) if found else None
