"""Writing blocks off the critical path: a one-slot background writer.

The model computes block k+1 while a thread compresses and writes block k. One slot: handing
over block k+1 first waits for block k, so at most one block is in flight (memory stays
bounded) and blocks are flagged in order. An error in the thread (a full disk, a refused
float16 value) is raised in the caller at the next hand-over or when the writer is closed.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class BackgroundWriter:
    def __init__(self, write: Callable[..., None]):
        self._write = write
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="actstore-writer")
        self._pending: Future | None = None
        self.busy_s = 0.0  # time the thread spent writing

    def submit(self, block: int, arrays: dict[str, Any]) -> None:
        """Hand ``block`` to the thread; waits only while the previous block is still being written."""
        self.wait()
        self._pending = self._executor.submit(self._timed_write, block, arrays)

    def wait(self) -> None:
        """Wait for the block in flight; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _timed_write(self, block: int, arrays: dict[str, Any]) -> None:
        start = time.perf_counter()
        try:
            self._write(block, **arrays)
        finally:
            self.busy_s += time.perf_counter() - start

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self._pending is not None:
                self._pending.exception()  # let the block in flight finish; the error already raised wins
                self._pending = None
        finally:
            self._executor.shutdown(wait=True)
