"""Device placement and training precision through accelerate: decided in this one place."""

from __future__ import annotations

from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")
_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def default_device() -> torch.device:
    """This process's device: its GPU under ``accelerate launch`` or on a GPU machine, else CPU."""
    from accelerate import PartialState

    return PartialState().device


def fast_bf16() -> bool:
    """Whether this machine runs bf16 matmuls natively (a GPU that supports it, or a CPU with
    AVX512-BF16/AMX); elsewhere bf16 autocast is emulated and slower than fp32."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False
    return bool(_CPU_BF16_FLAGS & set(cpuinfo.read_text(errors="replace").split()))


def mixed_precision(precision: str) -> str:
    """accelerate's name for a --precision choice: bf16 = bf16 autocast over fp32 master weights;
    auto = bf16 where the hardware is fast at it, else fp32."""
    from actstore.errors import UserError

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if precision == "auto":
        precision = "bf16" if fast_bf16() else "fp32"
    return "no" if precision == "fp32" else "bf16"
