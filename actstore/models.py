"""One model specification and one loader: a model name to a loaded model and tokenizer.

Names: an alias from model_aliases.json beside this file (``smollm2-135m``, the bundled GGUF;
``tiny-random``, built in code for tests), a local directory or ``.gguf`` file, or a Hugging
Face hub id already in the local cache. Nothing here reaches the network when
``HF_HUB_OFFLINE=1``.

Weights are loaded straight into the compute dtype onto their devices (transformers'
``dtype=`` and ``device_map=``, safetensors memory-mapped): no float32 copy of the model is
ever made on the host. A placement (``auto``, ``balanced``, ``sequential``) lets accelerate
spread the blocks over the GPUs, the host and ``offload_dir`` within ``max_memory``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import struct
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, get_args

import torch
from safetensors import SafetensorError

from common import UserError, default_model_cache, describe
from actstore.attention import check_attention, set_attention
from actstore.quiet import transformers_errors_only
from actstore.compute_dtype import Dtype, resolve_compute_dtype, torch_dtype
from actstore.families import family_of
from actstore.placement import QUANTIZATIONS
from actstore.quantization import check_quantization, quantization_config
from actstore.sharding import default_device

ALIASES_FILE = Path(__file__).with_name("model_aliases.json")
DEFAULT_MODEL = "smollm2-135m"  # the bundled model (an alias of ALIASES_FILE)
# accelerate's placements: spread the model over every device it may use, within --max-memory.
PLACEMENTS = ("auto", "balanced", "balanced_low_0", "sequential")
MAX_MEMORY_DEVICES = ("cpu", "mps")  # besides GPU indices 0, 1, ...
# What a model file that cannot be read raises: a config.json that is not a config (TypeError), a truncated
# safetensors (SafetensorError) or GGUF (struct.error, EOFError, ValueError) file, a missing file (OSError).
UNREADABLE = (OSError, ValueError, TypeError, SafetensorError, struct.error, EOFError)


@dataclass(frozen=True)
class ModelSpec:
    """Which model, and how it is loaded: every loader of the toolkit goes through ``load()``."""

    name: str
    compute_dtype: str = "float32"  # float32, bfloat16 or float16 (``requested`` resolves auto)
    device_map: str = "cpu"  # one device (cpu, cuda, cuda:1) or a placement (auto, balanced, sequential)
    max_memory: tuple[tuple[str, str], ...] = ()  # per device, e.g. (("0", "70GiB"), ("cpu", "200GiB"))
    offload_dir: str | None = None  # disk offload of weights that fit nowhere in max_memory (safetensors
    # checkpoints need none: their offloaded weights are read from the checkpoint itself)
    quantization: str = "none"  # none, 8bit or 4bit (bitsandbytes; 4bit = NF4, double quantization)
    attention: str = "auto"  # --attention: auto, sdpa, eager or flex_attention (actstore.attention)
    trains: bool = False  # whether the command trains through the model (auto then keeps the family's own)

    def __post_init__(self):
        if self.compute_dtype not in get_args(Dtype):
            raise UserError(f"unknown compute dtype {self.compute_dtype!r} (choose float32, bfloat16 or float16)")
        if self.quantization not in QUANTIZATIONS:
            raise UserError(f"unknown --quantize {self.quantization!r} (choose {', '.join(QUANTIZATIONS)})")
        if self.device_map not in PLACEMENTS:
            try:
                torch.device(self.device_map)
            except (RuntimeError, ValueError):
                raise UserError(f"unknown --device-map {self.device_map!r} (choose {', '.join(PLACEMENTS)}, "
                                "cpu or cuda:N)") from None
            if self.max_memory or self.offload_dir:
                raise UserError(f"--max-memory and --offload-dir need a placement (--device-map auto, balanced or "
                                f"sequential), not the single device {self.device_map!r}")
        if self.quantization != "none" and self.offload_dir:
            raise UserError("--quantize does not combine with --offload-dir (bitsandbytes weights cannot be offloaded "
                            "to disk); give the model more --max-memory or quantize it harder")
        check_attention(self.attention, self.main_device, trains=self.trains)

    @classmethod
    def requested(cls, name: str, *, compute_dtype: str = "auto", device: str | None = None,
                  device_map: str | None = None, max_memory: str | None = None, offload_dir: str | None = None,
                  quantization: str = "none", fallback_device: str | None = None, attention: str = "auto",
                  trains: bool = False) -> "ModelSpec":
        """The spec of command-line choices: ``auto`` dtype resolved for the device, ``--max-memory`` parsed;
        ``--max-memory`` or ``--offload-dir`` without ``--device-map`` mean ``auto``; with none of them,
        ``fallback_device`` (default: cuda when available, else cpu)."""
        if device and device_map and device != device_map:
            raise UserError(f"--device {device} and --device-map {device_map} disagree; give one of them")
        placement = (device_map or device or ("auto" if max_memory or offload_dir else None)
                     or fallback_device or default_device())
        spec = cls(name, "float32", placement, parse_max_memory(max_memory), offload_dir, quantization, attention, trains)
        spec.check_devices()
        return replace(spec, compute_dtype=resolve_compute_dtype(compute_dtype, spec.main_device))

    def check_devices(self) -> None:
        """Refuse, in one line, a device this machine does not have (``--device-map cuda:1`` on a machine
        with one GPU, ``mps`` off a Mac, a ``--max-memory`` GPU index that is not there)."""
        wanted = [] if self.placed else [torch.device(self.device_map)]
        wanted += [torch.device("cuda", int(d)) if d.isdigit() else torch.device(d) for d, _ in self.max_memory]
        for device in wanted:
            if not device_available(device):
                raise UserError(f"device {device} is not on this machine (it has: {', '.join(available_devices())})")

    @property
    def placed(self) -> bool:
        """Whether accelerate decides where each block goes (else the whole model is on ``device_map``)."""
        return self.device_map in PLACEMENTS

    @property
    def main_device(self) -> str:
        """The device inputs start on: the one device, or for a placement the first GPU (else the host)."""
        if not self.placed:
            return self.device_map
        return "cuda:0" if torch.cuda.is_available() else "cpu"

    def load(self) -> "LoadedModel":
        return load_model(self)


@dataclass
class LoadedModel:
    model: "torch.nn.Module"  # a transformers causal LM (LLaMA family)
    tokenizer: object
    name: str  # what the user asked for
    model_id: str  # canonical identity recorded in stores and probes
    spec: ModelSpec | None = None  # how it was loaded

    @property
    def n_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def compute_dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    @property
    def attention(self) -> str:
        """The attention implementation it runs (``--attention`` resolved; recorded with what it computed)."""
        return self.model.config._attn_implementation

    @property
    def input_device(self) -> torch.device:
        """Where the token ids go: the device the embeddings run on (accelerate moves them along)."""
        return execution_device(self.model.get_input_embeddings())


def execution_device(module: torch.nn.Module) -> torch.device:
    """The device ``module`` computes on: its accelerate hook's device for an offloaded module, else its weights'."""
    hook = getattr(module, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    return next(module.parameters()).device


def device_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return device.type in ("cpu", "meta")


def available_devices() -> list[str]:
    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu", *gpus, *(["mps"] if torch.backends.mps.is_available() else [])]


def parse_max_memory(text: str | None) -> tuple[tuple[str, str], ...]:
    """``0=70GiB,1=70GiB,cpu=200GiB`` -> (("0", "70GiB"), ("1", "70GiB"), ("cpu", "200GiB"))."""
    from accelerate.utils import convert_file_size_to_int

    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        device, _, size = item.strip().partition("=")
        device, size = device.strip(), size.strip()
        if not size or not (device.isdigit() or device in MAX_MEMORY_DEVICES):
            raise UserError(f"--max-memory {text!r}: {item.strip()!r} is not DEVICE=SIZE (DEVICE a GPU index or "
                            f"{' or '.join(MAX_MEMORY_DEVICES)}, SIZE like 70GiB)")
        try:
            convert_file_size_to_int(size)
        except ValueError:
            raise UserError(f"--max-memory {text!r}: {size!r} is not a size (like 70GiB or 500MB)") from None
        pairs.append((device, size))
    return tuple(pairs)


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
                self.log(f"loading model {self.spec.name} on {self.spec.device_map} ({self.spec.compute_dtype})")
            self._loaded = load_model(self.spec)
            self.load_count += 1
            if self.log:
                self.log(f"attention: {self._loaded.attention} (--attention {self.spec.attention})")
        return self._loaded


def model_aliases() -> dict[str, dict]:
    """Names accepted wherever a ``--model`` is asked for, with how each is built or found."""
    return json.loads(ALIASES_FILE.read_text(encoding="utf-8"))


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
                  several_gpus=spec.placed and torch.cuda.device_count() > 1)
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


TINY_RANDOM_BLOCKS = 4


def tiny_random_llama(seed: int = 0, n_layers: int = TINY_RANDOM_BLOCKS, hidden_size: int = 64, n_heads: int = 4) -> LoadedModel:
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


def _load_packaged_gguf(spec: ModelSpec, alias: dict) -> LoadedModel:
    """A GGUF shipped in a pip package; dequantized once and cached as float32 safetensors, and
    cached once more per other compute dtype, so that a load maps its weights without a cast."""
    from transformers import AutoTokenizer

    cache = _packaged_cache(spec, alias)
    model = _from_pretrained(cache, spec)
    tokenizer = AutoTokenizer.from_pretrained(cache)
    tokenizer.name_or_path = spec.name  # messages name the alias the user typed, not the cache directory
    return LoadedModel(model, tokenizer, spec.name, f"{spec.name}:{alias['gguf_file']}")


def _packaged_cache(spec: ModelSpec, alias: dict) -> Path:
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
    from actstore.model_names import model_name

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
        return AutoTokenizer.from_pretrained(_packaged_cache(ModelSpec(name), aliases[name]))
    source, kwargs = _model_source(name)
    try:
        if "gguf_file" in kwargs:
            source, kwargs = gguf_cache(Path(name), "float32"), {}
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except UNREADABLE as err:
        raise UserError(f"{name}: cannot load its tokenizer ({describe(err)})") from None


FINGERPRINT_HEAD = 1 << 16  # bytes read from the start of each file (a safetensors header, a GGUF's metadata)
FINGERPRINT_SAMPLES = 16  # and this many pieces of FINGERPRINT_PIECE bytes spread over the rest
FINGERPRINT_PIECE = 1 << 12


def model_fingerprint(name: str) -> str | None:
    """The identity of a model's content: for a hub id the revision its local cache resolves to now
    (None for an alias, or a name not in the cache); for a local model every file of the directory
    (or the one .gguf file) by name and size, its first 64 KiB and 16 pieces spread over it. Cheap (a
    few hundred kB read per file, and read again only when a file's size or modification time
    changed) and independent of paths and modification times, so the same checkpoint copied elsewhere
    keeps its stores, while weights replaced in place, or another checkpoint reached by the same
    path, do not reuse them."""
    path = Path(name).expanduser()
    if name in model_aliases():
        return None
    if not path.exists():
        return _hub_revision(name)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts)
    listing = tuple((str(file.relative_to(path) if path.is_dir() else file.name), file.stat().st_size,
                     file.stat().st_mtime_ns, str(file)) for file in files)
    return _content_digest(listing)


@functools.lru_cache(maxsize=64)
def _content_digest(listing: tuple[tuple[str, int, int, str], ...]) -> str:
    """The digest of the files in ``listing`` ((name, size, mtime, path) each); cached per listing, so
    one run reads a large checkpoint's samples once, and again only after a file changed."""
    import hashlib

    digest = hashlib.sha256()
    for name, size, _, location in listing:
        digest.update(f"{name}\0{size}\0".encode())
        with open(location, "rb") as handle:
            digest.update(handle.read(FINGERPRINT_HEAD))
            for k in range(FINGERPRINT_SAMPLES):
                handle.seek(size * (k + 1) // (FINGERPRINT_SAMPLES + 1))
                digest.update(handle.read(FINGERPRINT_PIECE))
    return digest.hexdigest()[:20]


def _hub_revision(name: str) -> str | None:
    """``revision:<commit>`` that the local Hugging Face cache resolves ``name`` to (what a load would
    read), without loading it; None when the name is not cached as a model."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a repository id
        return None
    return f"revision:{Path(found).parent.name}" if isinstance(found, str) else None



def model_n_blocks(name: str) -> int | None:
    """The model's number of blocks (layers 0..n) from its config alone, no weights read; None when no config
    can be read here (a packaged alias never converted, a hub id not in the cache)."""
    from transformers import AutoConfig

    aliases = model_aliases()
    if _is_builtin(name, aliases):
        return TINY_RANDOM_BLOCKS
    if name in aliases:
        source, kwargs = default_model_cache() / name, {}
        if not (source / "config.json").is_file():
            return None
    else:
        source, kwargs = _model_source(name)
    try:
        with transformers_errors_only():
            config = AutoConfig.from_pretrained(source, **{"local_files_only": True, **kwargs})
    except (*UNREADABLE, KeyError, UserError):
        return None
    config = getattr(config, "text_config", None) or config
    found = getattr(config, "num_hidden_layers", None)
    return int(found) if found else None
