"""Run a CLI (``actstore``, or ``$KILL_CLI``) with arguments from the command line, SIGKILLing
itself at a chosen moment.

``KILL_AT`` picks the moment (a real SIGKILL: no exception handlers, no ``finally``, no lock release):
- ``forward:N``  at the N-th forward call of decoder block 1 (in the middle of a batch),
- ``write:N``    at the N-th array write inside ``ActivationStore.write_block`` (the block's data
  partly written, its flag not yet),
- ``complete``   when the store is about to be marked complete (every block flagged),
- ``seal``       when a saved directory (probe, reward model) has all its files in its staging
  directory and is about to be sealed and moved into place.
Before dying it prints ``killed at ...`` on stderr so the test can check where it died.
"""

import os
import signal
import sys

import torch
import zarr

import actstore.models.loading
from actstore.store import ActivationStore


def die(where: str) -> None:
    print(f"killed at {where}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_forward(n: int) -> None:
    real_load = actstore.models.loading.load_model
    calls = [0]

    def count(module, args):
        calls[0] += 1
        if calls[0] == n:
            die(f"forward {n}")

    def load_model(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        loaded.model.model.layers[1].register_forward_pre_hook(count)
        return loaded

    actstore.models.loading.load_model = load_model


def kill_in_write(n: int) -> None:
    real_write, real_setitem = ActivationStore.write_block, zarr.Array.__setitem__
    state = {"inside": False, "writes": 0, "block": None}

    def write_block(self, block, **arrays):
        state["inside"], state["block"] = True, block
        try:
            return real_write(self, block, **arrays)
        finally:
            state["inside"] = False

    def setitem(self, selection, value):
        if state["inside"]:
            state["writes"] += 1
            if state["writes"] == n:
                die(f"write {n} (block {state['block']}, array {self.basename})")
        return real_setitem(self, selection, value)

    ActivationStore.write_block, zarr.Array.__setitem__ = write_block, setitem


def kill_before_complete() -> None:
    ActivationStore.mark_complete = lambda self, **record: die("complete")


def kill_before_seal() -> None:
    import common.atomic

    common.atomic._write_marker = lambda directory, record: die(f"seal {directory.name}")


def main() -> None:
    torch.set_num_threads(1)
    phase, _, count = os.environ["KILL_AT"].partition(":")
    {"forward": lambda: kill_in_forward(int(count)), "write": lambda: kill_in_write(int(count)),
     "complete": kill_before_complete, "seal": kill_before_seal}[phase]()
    import cli

    getattr(cli, os.environ.get("KILL_CLI", "actstore"))(sys.argv[1:])


if __name__ == "__main__":
    main()
