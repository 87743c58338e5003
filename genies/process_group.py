"""The process group of a `genies run` launch: joining it, its collectives (the plan shared, results gathered),
failures told through the launch's key-value store, and a watcher thread that stops this process within
about a second when another failed or went silent."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta
from typing import Callable

from common import UserError, environment_int
from actstore.store.sharding import Shard

Log = Callable[[str], None]

BARRIER_TIMEOUT = timedelta(hours=72)  # the longest one process may work on a stage while the others wait
JOIN_TIMEOUT = timedelta(minutes=30)
POLL_S = 0.5  # how often each process looks for a failure of another
BEAT_S = 2.0
SILENT_AFTER_S = 300.0  # a process whose heartbeat stopped this long ago is taken for dead


class Stopped(BaseException):
    """Raised in the main thread when another process failed or the launcher stops this one (SIGTERM)."""


class Link:
    """This process's ties to the others of its launch: the process group (the plan, the barriers) and the
    launch's key-value store (failures, heartbeats, the progress count)."""

    def __init__(self, rank: int, size: int, local_rank: int, local_size: int, store):
        self.rank, self.size, self.local_rank, self.local_size, self.store = rank, size, local_rank, local_size, store
        self.prefix = f"genies/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        self.reason: str | None = None  # why this process was told to stop
        self._quit = threading.Event()
        self._watcher: threading.Thread | None = None
        self.printed = 0  # the overall count rank 0 printed last

    @classmethod
    def join(cls) -> "Link":
        """Join the launch that RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT describe (torchrun, accelerate)."""
        import torch
        import torch.distributed as dist

        shard = Shard.from_environment()
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise UserError(f"WORLD_SIZE={shard.world_size}, but {' and '.join(missing)} not set: start the processes "
                            "with torchrun or accelerate launch (docs/several-processes.md)")
        local_rank = environment_int(os.environ, "LOCAL_RANK", 0)
        try:
            store, rank, size = next(dist.rendezvous("env://", timeout=JOIN_TIMEOUT))
        except (RuntimeError, ValueError, OSError) as err:
            raise UserError(f"process rank {shard.rank} could not join the launch at {os.environ['MASTER_ADDR']}:"
                            f"{os.environ['MASTER_PORT']} ({err})") from None
        gpu = torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("cpu:gloo,cuda:nccl" if gpu else "gloo", store=store, rank=rank, world_size=size,
                                timeout=BARRIER_TIMEOUT)
        return cls(rank, size, local_rank, environment_int(os.environ, "LOCAL_WORLD_SIZE", size), store)

    def close(self) -> None:
        import torch.distributed as dist

        self.stop_watching()
        if dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------------ collectives
    def share(self, payload=None):
        """Rank 0's ``payload`` in every process."""
        import torch.distributed as dist

        box = [payload]
        self._collective(lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def gather(self, mine) -> list:
        """Every process's ``mine`` (a barrier)."""
        import torch.distributed as dist

        every = [None] * self.size
        self._collective(lambda: dist.all_gather_object(every, mine))
        return every

    def _collective(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Stopped:
            raise
        except Exception as err:  # a process of the launch is gone (gloo: connection closed by peer)
            time.sleep(2 * POLL_S)  # its failure key, if it set one, is in the store by now
            raise Stopped(self.failure() or f"another process of this run stopped ({type(err).__name__})") from None

    # ------------------------------------------------------------------ the store
    def fail(self, message: str) -> None:
        """Tell the others this process failed (the first failure of the launch is kept); this process's own
        watcher stops first, so that it does not take the failure for another's."""
        self.stop_watching()
        try:
            self.store.compare_set(self.prefix + "failed", "", message)
        except Exception:  # the store is gone (rank 0 hosted it): the others notice that instead
            pass

    def failure(self) -> str | None:
        try:
            key = self.prefix + "failed"
            return self.store.get(key).decode() if self.store.check([key]) else None
        except Exception:
            return None

    def count_done(self) -> int:
        """Add one finished unit to the launch's count; the count now."""
        try:
            return int(self.store.add(self.prefix + "done", 1))
        except Exception:
            return 0

    # ------------------------------------------------------------------ watching the others
    def watch(self, total: int, log: Log) -> None:
        """From a thread: stop this process (SIGTERM to itself) when another failed, went silent, or the store is
        gone; on rank 0 also print the overall count as it moves."""
        self._watcher = threading.Thread(target=self._watch, args=(total, log), name="genies run watcher", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        self._quit.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()

    def _watch(self, total: int, log: Log) -> None:
        seen = {rank: (-1, time.monotonic()) for rank in range(self.size) if rank != self.rank}
        next_beat = 0.0
        while not self._quit.wait(POLL_S):
            try:
                failed = self.store.check([self.prefix + "failed"])
                if failed:
                    return self._stop(self.failure() or "another process failed")
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + BEAT_S
                    self.store.add(f"{self.prefix}beat{self.rank}", 1)
                    for rank, (count, since) in seen.items():
                        beats = int(self.store.add(f"{self.prefix}beat{rank}", 0))
                        if beats != count:
                            seen[rank] = (beats, now)
                        elif now - since > SILENT_AFTER_S:
                            return self._stop(f"rank {rank} has given no sign of life for {SILENT_AFTER_S:.0f} s "
                                              "(killed?)")
                if self.rank == 0:
                    done = int(self.store.add(self.prefix + "done", 0))
                    if done > self.printed:
                        self.printed = done
                        log(f"overall: {done}/{total} units done")
            except Exception as err:  # the store is gone: rank 0 (which hosts it without torchrun) or the launcher
                return self._stop(f"lost the launch's store ({type(err).__name__}): rank 0 or the launcher stopped")

    def _stop(self, reason: str) -> None:
        if self._quit.is_set():
            return
        self.reason = reason
        os.kill(os.getpid(), signal.SIGTERM)  # wakes the main thread, even from a sleep
