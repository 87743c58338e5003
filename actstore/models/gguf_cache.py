"""GGUF weights de-quantized once and cached as safetensors: a packaged alias's and a user's ``.gguf`` file,
each cache sealed, checked at every load and rebuilt when damaged."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

import torch

from common import UserError, default_model_cache
from actstore.models.compute_dtype import torch_dtype
from actstore.models.fingerprint import model_fingerprint
from actstore.models.spec import ModelSpec


def packaged_cache(spec: ModelSpec, alias: dict) -> Path:
    """The converted weights of a packaged alias in the spec's compute dtype (converted on first use)."""
    name = spec.name
    found = importlib.util.find_spec(alias["package"])
    if found is None or not found.submodule_search_locations:
        raise UserError(f"model {name!r} needs the package {alias['package']}: run `{alias['install']}`")
    package_dir = Path(list(found.submodule_search_locations)[0])
    gguf_path = package_dir / alias["gguf_file"]
    if "assemble" not in alias and not gguf_path.is_file():
        raise UserError(f"{gguf_path}: bundled model file missing; reinstall with `{alias['install']}`")
    def convert(staging: Path) -> None:
        if "assemble" in alias:
            _convert_assembled_gguf(name, alias, staging)
        else:
            _convert_gguf(package_dir, alias["gguf_file"], staging)

    return _converted_cache(default_model_cache() / name, spec.compute_dtype, convert)


def _converted_cache(converted: Path, compute_dtype: str, convert: Callable[[Path], None]) -> Path:
    """``converted`` (float32 weights that ``convert(staging)`` writes once), or its sibling ``<name>.<dtype>`` in
    another compute dtype; each sealed, checked at each load and rebuilt when damaged."""
    def float32_cache() -> Path:
        return _sealed_cache(converted, convert)

    if compute_dtype == "float32":
        return float32_cache()
    typed = converted.with_name(f"{converted.name}.{compute_dtype}")
    return _sealed_cache(typed, lambda staging: _cache_in_dtype(float32_cache(), compute_dtype, staging))


def gguf_cache(path: Path, compute_dtype: str) -> Path:
    """A user's ``.gguf`` file de-quantized once and cached like a packaged alias's, under a directory named by
    its short name and content fingerprint (another file at the same path, or the same file edited, is converted
    anew; the same file copied elsewhere reuses it)."""
    from common.model_names import model_name

    path = Path(path).expanduser().resolve()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name(str(path)))
    converted = default_model_cache() / "gguf" / f"{name}-{model_fingerprint(str(path))}"
    return _converted_cache(converted, compute_dtype, lambda staging: _convert_gguf(path.parent, path.name, staging))


def _convert_assembled_gguf(name: str, alias: dict, staging: Path) -> None:
    """A GGUF its package ships in chunks: ``alias["assemble"]`` names the package's function that
    joins them, ``assemble(output_path=...)``, returning the file's path. It is joined inside the
    staging directory, converted, and deleted before the cache is sealed: only the float32 cache stays."""
    import importlib

    package = importlib.import_module(alias["package"])
    scratch = staging / ".assembled"
    try:
        gguf_path = Path(getattr(package, alias["assemble"])(output_path=scratch / alias["gguf_file"]))
    except (OSError, ValueError) as err:  # missing chunk packages, a checksum that does not match
        raise UserError(f"model {name!r}: cannot assemble its GGUF ({err}); reinstall with `{alias['install']}`") from None
    try:
        _convert_gguf(gguf_path.parent, gguf_path.name, staging)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _sealed_cache(path: Path, build) -> Path:
    """A cache directory of converted weights, checked against its seal (common/atomic.py) at each
    load; one that is missing, half-written or damaged is built again by ``build(staging_dir)``."""
    from common.atomic import atomic_directory, is_complete, verify_directory

    if is_complete(path):
        try:
            verify_directory(path)
            return path
        except UserError as err:
            print(f"rebuilding the model cache: {err}", file=sys.stderr)
    with atomic_directory(path) as staging:
        build(staging)
    return path


def _convert_gguf(package_dir: Path, gguf_file: str, staging: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=gguf_file, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; rebuild a plain one from its weights.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)


def _cache_in_dtype(cache: Path, dtype: str, staging: Path) -> None:
    """``cache`` (float32) saved in ``dtype`` (the same values a load would cast to)."""
    from transformers import AutoModelForCausalLM

    from common.atomic import MARKER

    shutil.copytree(cache, staging, ignore=shutil.ignore_patterns("*.safetensors", MARKER), dirs_exist_ok=True)
    AutoModelForCausalLM.from_pretrained(cache, dtype=torch_dtype(dtype), device_map="cpu").save_pretrained(staging)
