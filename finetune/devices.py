"""Device placement and training precision through accelerate: decided in this one place."""

from __future__ import annotations

from typing import Literal

import torch

from actstore.models.compute_dtype import runs_bfloat16_fast
from actstore.models.devices import default_device

Precision = Literal["auto", "fp32", "bf16"]


def fast_bf16() -> bool:
    """Whether this process's device runs bf16 matmuls natively; elsewhere bf16 autocast is
    emulated and slower than fp32."""
    return runs_bfloat16_fast(torch.device(default_device()))


def mixed_precision(precision: Precision) -> str:
    """accelerate's name for a --precision choice (TrainConfig checked it): bf16 = bf16 autocast over
    fp32 master weights; auto = bf16 where the hardware is fast at it, else fp32."""
    if precision == "auto":
        precision = "bf16" if fast_bf16() else "fp32"
    return "no" if precision == "fp32" else "bf16"


def check_adapter_placement(loaded) -> None:
    """An adapter needs its base weights resident on the device they run on: accelerate's offloaded
    weights (on disk, or on the host for a GPU model) live on the meta device between uses, where
    peft would create the adapter's own weights too."""
    from common import UserError

    placement = getattr(loaded.model, "hf_device_map", None) or {}
    runs_on_gpu = loaded.input_device.type != "cpu"
    offloaded = [name for name, device in placement.items() if device == "disk" or (runs_on_gpu and device == "cpu")]
    if offloaded:
        raise UserError(f"model {loaded.name!r}: {len(offloaded)} of its modules are offloaded ({offloaded[0]}, ...); "
                        "adapters need every weight on a device: raise --max-memory, add GPUs, or --quantize 4bit")
