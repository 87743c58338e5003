"""How many threads torch computes with: the cores that are free when the work starts.

torch takes one thread per core by default. On a shared machine whose cores are busy with other
work, those threads wait for each other at every operation (each waits for the slowest, which
waits for a core): extraction on 2 busy cores ran at 0.7x a one-thread loop (benchmarks/RESULTS.md,
"threads"). So the default is the number of cores not already busy with other processes, measured
over a quarter of a second when the command starts (``/proc/stat``, less this process's own CPU
time; the one-minute load average where there is no ``/proc``, which lags and counts this process
too), at least one; ``--threads N`` sets it.
"""

from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from common import UserError

THREADS_HELP = ("Threads torch computes with (default: the cores not busy with other processes when the command "
                "starts; at least 1).")
SAMPLE_S = 0.25


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores minus the load of the other processes (in cores, rounded), between 1 and all of them."""
    cores = usable_cores() if cores is None else cores
    load = busy_cores() if load is None else load
    return max(1, min(cores, round(cores - load)))


def busy_cores(seconds: float = SAMPLE_S) -> float:
    """How many cores other processes keep busy now: the machine's busy time over ``seconds`` less
    this process's, in cores."""
    try:
        before, own_before = _cpu_times(), time.process_time()
        time.sleep(seconds)
        after, own_after = _cpu_times(), time.process_time()
    except (OSError, ValueError):
        return os.getloadavg()[0]
    ticks_per_core = (after[0] - before[0]) / (os.cpu_count() or 1)  # all cores' ticks, per core
    if ticks_per_core <= 0:
        return 0.0
    busy = (after[1] - before[1]) / ticks_per_core  # cores' worth of busy time, the machine's
    return max(0.0, busy - (own_after - own_before) / seconds)


def _cpu_times() -> tuple[int, int]:
    """(all ticks, busy ticks) of the machine from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]), sum(fields[:8]) - idle


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
