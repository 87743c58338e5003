"""`genies` (the command line) with a failure made to happen in one process of a launch: for
tests/test_genies_processes.py, started by torchrun in place of ``-m genies``.

``FAIL_AT=<rank>:<how>:<where>``: the process of that rank fails when it first reaches ``where``:
- ``write``    a store block's write (inside the extraction, with stores half filled),
- ``train``    a live training set,
- ``evaluate`` an evaluation;
- ``loss``     the first training loss of a live training set (inside its steps: with DDP, the other
               processes are in the step's all-reduce);
``how`` is ``kill`` (a real SIGKILL: no handler, no ``finally``) or ``raise`` (a RuntimeError).
``SLOW_RANK=<rank>``: that process's fits, trainings and evaluations first sleep for 5 minutes (so a
test can tell that it was stopped, not that it finished).
``NO_DROPOUT=1``: LoRA trains without dropout (whose masks differ when a step's pairs are split over
processes), so that training one set in several processes can be compared with one process.
"""

import os
import signal
import sys
import time

import genies.steps
import finetune.reward_model
from actstore.store import ActivationStore


def fail(how: str, where: str) -> None:
    print(f"failing at {where} ({how}) at {time.time():.3f}", file=sys.stderr, flush=True)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected failure at {where}")


def failing(real, how: str, where: str):
    def wrapper(*args, **kwargs):
        fail(how, where)
        return real(*args, **kwargs)

    return wrapper


def slow(real):
    def wrapper(*args, **kwargs):
        time.sleep(300)
        return real(*args, **kwargs)

    return wrapper


def main() -> None:
    rank = os.environ.get("RANK", "0")
    target, _, rest = os.environ.get("FAIL_AT", "").partition(":")
    how, _, where = rest.partition(":")
    if target == rank:
        if where == "write":
            ActivationStore.write_block = failing(ActivationStore.write_block, how, where)
        elif where == "loss":
            finetune.reward_model.pair_loss = failing(finetune.reward_model.pair_loss, how, where)
        else:
            name = {"train": "train_live", "evaluate": "run_evaluations"}[where]
            setattr(genies.steps, name, failing(getattr(genies.steps, name), how, where))
    if os.environ.get("NO_DROPOUT") == "1":
        from dataclasses import replace

        from finetune.train import TrainConfig

        with_dropout = TrainConfig.settings.fget
        TrainConfig.settings = property(lambda config: replace(with_dropout(config), lora_dropout=0.0))
    if os.environ.get("SLOW_RANK") == rank:
        for name in ("train_live", "fit_probes", "run_evaluations"):
            setattr(genies.steps, name, slow(getattr(genies.steps, name)))
    import cli

    cli.genies(sys.argv[1:], prog_name="genies")


if __name__ == "__main__":
    main()
