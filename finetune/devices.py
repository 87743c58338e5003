"""Device placement through accelerate: the one place that decides where live models run."""

from __future__ import annotations

import torch

PRECISIONS = ("fp32", "bf16")


def default_device() -> torch.device:
    """This process's device: its GPU under ``accelerate launch`` or on a GPU machine, else CPU."""
    from accelerate import PartialState

    return PartialState().device


def mixed_precision(precision: str) -> str:
    """accelerate's name for a --precision choice (bf16 = bf16 autocast, fp32 master weights)."""
    from actstore.errors import UserError

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    return "no" if precision == "fp32" else "bf16"
