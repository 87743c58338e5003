"""Training memory: gradient checkpointing for large base models, and the peak memory a run used.

Gradient checkpointing keeps only each block's input in the forward pass and recomputes the
block in the backward pass: activation memory falls from every block's intermediates to one
block's, for about a third more compute. It is on by default from CHECKPOINTING_FROM_PARAMETERS
parameters (1B), where activations start to rival the frozen weights at the default batch; below
that the recompute costs more than the memory is worth.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

import torch

CHECKPOINTING_FROM_PARAMETERS = 1_000_000_000


def wants_checkpointing(requested: bool | None, model: torch.nn.Module) -> bool:
    """``requested`` when given, else on for models of CHECKPOINTING_FROM_PARAMETERS parameters or more."""
    if requested is not None:
        return requested
    return sum(p.numel() for p in model.parameters()) >= CHECKPOINTING_FROM_PARAMETERS


@dataclass(frozen=True)
class PeakMemory:
    host_rss_bytes: int  # the process's peak resident set size
    gpu_bytes: int | None  # peak memory allocated by torch on all GPUs together; None without one


def peak_memory() -> PeakMemory:
    gpu = None
    if torch.cuda.is_available():
        gpu = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
    return PeakMemory(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, gpu)
