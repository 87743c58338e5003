"""One model specification: which model, on which devices, in which dtype, quantized or not.

Every loader of the toolkit goes through ``ModelSpec.load()`` (actstore/models/loading.py). A placement
(``auto``, ``balanced``, ``sequential``) lets accelerate spread the blocks over the GPUs, the host and
``offload_dir`` within ``max_memory``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import get_args

import torch

from common import UserError
from actstore.models.attention import check_attention
from actstore.models.compute_dtype import Dtype, resolve_compute_dtype
from actstore.models.devices import default_device, device_available, execution_device, unavailable_device_message
from actstore.models.placement import QUANTIZATIONS


# accelerate's placements: spread the model over every device it may use, within --max-memory.
PLACEMENTS = ("auto", "balanced", "balanced_low_0", "sequential")
MAX_MEMORY_DEVICES = ("cpu", "mps")  # besides GPU indices 0, 1, ...


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
    attention: str = "auto"  # --attention: auto, sdpa, eager or flex_attention (actstore.models.attention)
    trains: bool = False  # whether the command trains through the model (auto then keeps the family's own)
    tree_masks: bool = True  # whether passes carry prefix-tree masks (auto takes flex attention on a GPU only then)

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
        check_attention(self.attention, self.main_device, trains=self.trains, several_gpus=self.several_gpus)

    @classmethod
    def requested(cls, name: str, *, compute_dtype: str = "auto", device: str | None = None,
                  device_map: str | None = None, max_memory: str | None = None, offload_dir: str | None = None,
                  quantization: str = "none", fallback_device: str | None = None, attention: str = "auto",
                  trains: bool = False, tree_masks: bool = True) -> "ModelSpec":
        """The spec of command-line choices: ``auto`` dtype resolved for the device, ``--max-memory`` parsed;
        ``--max-memory`` or ``--offload-dir`` without ``--device-map`` mean ``auto``; with none of them,
        ``fallback_device`` (default: cuda when available, else cpu)."""
        if device and device_map and device != device_map:
            raise UserError(f"--device {device} and --device-map {device_map} disagree; give one of them")
        placement = (device_map or device or ("auto" if max_memory or offload_dir else None)
                     or fallback_device or default_device())
        spec = cls(name, "float32", placement, parse_max_memory(max_memory), offload_dir, quantization, attention, trains,
                   tree_masks)
        spec.check_devices()
        return replace(spec, compute_dtype=resolve_compute_dtype(compute_dtype, spec.main_device))

    def check_devices(self) -> None:
        """Refuse, in one line, a device this machine does not have (``--device-map cuda:1`` on a machine
        with one GPU, ``mps`` off a Mac, a ``--max-memory`` GPU index that is not there), saying why CUDA
        cannot be used where it was asked for (a CPU build of torch, a driver too old)."""
        wanted = [] if self.placed else [torch.device(self.device_map)]
        wanted += [torch.device("cuda", int(d)) if d.isdigit() else torch.device(d) for d, _ in self.max_memory]
        for device in wanted:
            if not device_available(device):
                raise UserError(unavailable_device_message(device))

    @property
    def placed(self) -> bool:
        """Whether accelerate decides where each block goes (else the whole model is on ``device_map``)."""
        return self.device_map in PLACEMENTS

    @property
    def several_gpus(self) -> bool:
        """Whether accelerate may spread the model over more than one GPU."""
        return self.placed and torch.cuda.is_available() and torch.cuda.device_count() > 1

    @property
    def main_device(self) -> str:
        """The device inputs start on: the one device, or for a placement the first GPU (else the host)."""
        if not self.placed:
            return self.device_map
        return "cuda:0" if torch.cuda.is_available() else "cpu"

    def load(self) -> "LoadedModel":
        from actstore.models.loading import load_model

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
