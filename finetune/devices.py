"""Device placement and training precision through accelerate: decided in this one place."""

from __future__ import annotations

import torch

from actstore.compute_dtype import runs_bfloat16_fast

PRECISIONS = ("auto", "fp32", "bf16")


def default_device() -> torch.device:
    """This process's device: its GPU under ``accelerate launch`` or on a GPU machine, else CPU."""
    from accelerate import PartialState

    return PartialState().device


def fast_bf16() -> bool:
    """Whether this process's device runs bf16 matmuls natively; elsewhere bf16 autocast is
    emulated and slower than fp32."""
    return runs_bfloat16_fast(default_device())


def mixed_precision(precision: str) -> str:
    """accelerate's name for a --precision choice: bf16 = bf16 autocast over fp32 master weights;
    auto = bf16 where the hardware is fast at it, else fp32."""
    from actstore.errors import UserError

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if precision == "auto":
        precision = "bf16" if fast_bf16() else "fp32"
    return "no" if precision == "fp32" else "bf16"
