"""Several processes filling one store: who computes which block, and who creates the store.

``accelerate launch --num_processes N`` (and ``torchrun``) start N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; the store is the only thing they share, so
no process group is needed. Process ``rank`` computes the blocks with
``block % world_size == rank``; blocks are chunk-aligned, so no two processes write a chunk.
Rank 0 creates the store, the others wait until it exists with their extraction's identity;
each process, when it finds every block flagged after its own, marks the store complete
(idempotently), so the last one to finish does.

``genies run`` in several processes turns each store's blocks by a rank (``Shard.first``): block
``b`` falls to rank ``(first + b) % world_size`` and rank ``first`` creates the store, so stores of
one block (small splits) spread over the processes instead of all falling to rank 0.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from common import UserError, environment_int

CREATION_WAIT_S = 1800.0  # rank 0 loads the model before it creates the store


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1
    first: int = 0  # the rank that computes block 0 and creates the store; block b falls to (first + b) % world_size

    def __post_init__(self):
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise UserError(f"process rank {self.rank} is not within world size {self.world_size} (RANK / WORLD_SIZE)")
        if not 0 <= self.first < self.world_size:
            raise UserError(f"rank {self.first} cannot create a store of a run of {self.world_size} process(es)")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def creates(self) -> bool:
        """Whether this process creates (or re-creates) the store; the others wait for it."""
        return self.rank == self.first

    def owns(self, block: int) -> bool:
        return (self.first + block) % self.world_size == self.rank

    @classmethod
    def from_environment(cls, environ: dict | None = None) -> "Shard":
        """This process's shard from ``RANK`` / ``WORLD_SIZE`` (set by accelerate launch and torchrun)."""
        environ = os.environ if environ is None else environ
        return cls(environment_int(environ, "RANK", 0), environment_int(environ, "WORLD_SIZE", 1))


def wait_for_creation(url: str, ready: Callable[[], object | None], *, rank: int,
                      main_gone: Callable[[], bool] = lambda: False, timeout_s: float = CREATION_WAIT_S,
                      poll_s: float = 0.5, creator: int = 0) -> object:
    """Poll ``ready()`` (which returns the store once rank ``creator`` (0) has created it, else None) until it
    does; give up at once when ``main_gone()`` says that rank has stopped."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = ready()
        if found is not None:
            return found
        if main_gone():
            found = ready()  # rank 0 may have created the store, filled its blocks and left since
            if found is not None:
                return found
            raise UserError(f"{url}: process rank {rank} stops: rank {creator} of this run stopped before creating "
                            f"the store (see rank {creator}'s error)")
        if time.monotonic() > deadline:
            raise UserError(f"{url}: process rank {rank} waited {timeout_s:.0f} s for rank {creator} to create this "
                            f"store; is rank {creator} running?")
        time.sleep(poll_s)
