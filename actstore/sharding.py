"""Several processes filling one store: who computes which block, and who creates the store.

``accelerate launch --num_processes N`` (and ``torchrun``) start N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; the store is the only thing they share, so
no process group is needed. Process ``rank`` computes the blocks with
``block % world_size == rank``; blocks are chunk-aligned, so no two processes write a chunk.
Rank 0 creates the store, the others wait until it exists with their extraction's identity;
each process, when it finds every block flagged after its own, marks the store complete
(idempotently), so the last one to finish does.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from common import UserError

CREATION_WAIT_S = 1800.0  # rank 0 loads the model before it creates the store


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1

    def __post_init__(self):
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise UserError(f"process rank {self.rank} is not within world size {self.world_size} (RANK / WORLD_SIZE)")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, block: int) -> bool:
        return block % self.world_size == self.rank

    @classmethod
    def from_environment(cls, environ: dict | None = None) -> "Shard":
        """This process's shard from ``RANK`` / ``WORLD_SIZE`` (set by accelerate launch and torchrun)."""
        environ = os.environ if environ is None else environ
        return cls(_int_variable(environ, "RANK", 0), _int_variable(environ, "WORLD_SIZE", 1))


def default_device(environ: dict | None = None) -> str:
    """This process's device, for every command: cuda (its GPU, ``cuda:LOCAL_RANK``, under a multi-process
    launch such as `accelerate launch` or torchrun) when available, else cpu."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    environ = os.environ if environ is None else environ
    if _int_variable(environ, "WORLD_SIZE", 1) > 1:
        return f"cuda:{_int_variable(environ, 'LOCAL_RANK', 0)}"
    return "cuda"


def wait_for_creation(url: str, ready: Callable[[], object | None], *, rank: int,
                      main_gone: Callable[[], bool] = lambda: False, timeout_s: float = CREATION_WAIT_S,
                      poll_s: float = 0.5) -> object:
    """Poll ``ready()`` (which returns the store once rank 0 has created it, else None) until it does;
    give up at once when ``main_gone()`` says rank 0 has stopped."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = ready()
        if found is not None:
            return found
        if main_gone():
            found = ready()  # rank 0 may have created the store, filled its blocks and left since
            if found is not None:
                return found
            raise UserError(f"{url}: process rank {rank} stops: rank 0 of this run stopped before creating the store "
                            "(see rank 0's error)")
        if time.monotonic() > deadline:
            raise UserError(f"{url}: process rank {rank} waited {timeout_s:.0f} s for rank 0 to create this store; "
                            "is rank 0 running?")
        time.sleep(poll_s)


def _int_variable(environ, name: str, default: int) -> int:
    value = environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None
