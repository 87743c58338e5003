"""The dtype the model computes in: bfloat16 where the device runs it natively, else float32.

Only the compute changes; the storage dtype (``--dtype``) is separate. float16 is never chosen
automatically: on CPUs it runs hundreds of times slower than float32, and on GPUs bfloat16 has
the same speed without float16's overflow on large activations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import torch

from common import UserError
from actstore.models.devices import default_device

Dtype = Literal["float32", "bfloat16", "float16"]
ComputeDtype = Literal["auto", "float32", "bfloat16", "float16"]  # a --compute-dtype choice
COMPUTE_DTYPES = get_args(ComputeDtype)
COMPUTE_DTYPE_HELP = "Dtype the model computes in; auto: bfloat16 where the device runs it natively, else float32."
# CPU flags of native bfloat16 matrix multiplies (AVX512-BF16 dot products, AMX tiles).
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def resolve_compute_dtype(requested: str, device: str | torch.device | None) -> str:
    """``auto`` -> ``bfloat16`` or ``float32`` for ``device``; an explicit name is returned as is."""
    if requested not in COMPUTE_DTYPES:
        raise UserError(f"unknown --compute-dtype {requested!r} (choose {', '.join(COMPUTE_DTYPES)})")
    if requested != "auto":
        return requested
    return "bfloat16" if runs_bfloat16_fast(torch.device(device or default_device())) else "float32"


def runs_bfloat16_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        # Ampere (8.0) and later have bfloat16 tensor cores; older cards only emulate it.
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return bool(NATIVE_BF16_CPU_FLAGS & cpu_flags())
    return False


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere: no native bfloat16 assumed)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)
