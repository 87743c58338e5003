"""Wall time per extraction stage (tokenize, forward, gather, write), so the bottleneck is visible.

On a GPU, work is queued asynchronously: without a synchronisation at each stage boundary the
time of the forward pass would show up in whichever stage first waits for its results.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

STAGES = ("tokenize", "forward", "gather", "write")


@dataclass
class StageClock:
    synchronize: object = None  # e.g. torch.cuda.synchronize; None on CPU
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @contextmanager
    def stage(self, name: str):
        if self.synchronize:
            self.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.synchronize:
                self.synchronize()
            self.seconds[name] += time.perf_counter() - start

    def totals(self) -> dict[str, float]:
        """``{"tokenize_s": ..., "forward_s": ..., "gather_s": ..., "write_s": ...}``"""
        return {f"{name}_s": value for name, value in self.seconds.items()}


def clock_for(device) -> StageClock:
    import torch

    device = torch.device(device)
    return StageClock(synchronize=(lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None)

