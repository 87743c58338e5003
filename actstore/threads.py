"""How many threads torch computes with: the cores that are free when the work starts.

torch takes one thread per core by default. On a shared machine whose cores are busy with other
work, those threads wait for each other at every operation (each waits for the slowest, which
waits for a core): extraction on 2 busy cores ran at 0.7x a one-thread loop (benchmarks/RESULTS.md,
"threads"). So the default is the number of cores not already busy, read from the one-minute load
average when the command starts, at least one; ``--threads N`` sets it.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from typing import Iterator

from common import UserError

THREADS_HELP = ("Threads torch computes with (default: the cores not busy with other work when the command starts, "
                "from the load average; at least 1).")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores minus the load of the other work (rounded), between 1 and all of them."""
    cores = usable_cores() if cores is None else cores
    load = os.getloadavg()[0] if load is None else load
    return max(1, min(cores, round(cores - load)))


@functools.cache
def process_threads() -> int:
    """The free cores when this process first asked: later work of the same process (a notebook's
    next extraction, ``genies run``'s next stage) would see its own load and take fewer."""
    return free_cores()


_active: list[int] = []  # the thread counts of the enclosing compute_threads blocks


@contextmanager
def compute_threads(requested: int | None) -> Iterator[int]:
    """torch's intra-op threads set to ``requested`` inside, restored after. ``None``: the enclosing
    block's count (``genies run``'s for the extractions and training it runs), else ``process_threads()``."""
    import torch

    if requested is not None and requested < 1:
        raise UserError(f"--threads must be at least 1, got {requested}")
    threads = requested or (_active[-1] if _active else process_threads())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    _active.append(threads)
    try:
        yield threads
    finally:
        _active.pop()
        torch.set_num_threads(before)
