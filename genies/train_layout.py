"""Live training in several processes (`genies run --train-layout`): each training set in one process, or one
set in every process at once (DDP: each step's pairs split over the processes, gradients all-reduced).

One set per process keeps every process busy while there are at least as many sets as processes; a set trained
together takes about 1/N of the time on N processes, at the price of an all-reduce per step. ``auto`` therefore
trains the sets one per process as long as every process has one, and the rest (fewer sets than processes: a
run with one source on 4 GPUs, the tail of a run, or what is left of a resumed one) together. DDP needs the
whole model in each process: a model placed over several devices (``--device-map auto``) trains per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from common import UserError

TrainLayout = Literal["auto", "per-process", "ddp"]
TRAIN_LAYOUT_HELP = ("lora / prompt-tuning in several processes (torchrun): per-process (each training set in one "
                     "process), ddp (each set in all processes at once, each step's pairs split over them), or auto "
                     "(one per process while every process has one, the rest together).")


@dataclass(frozen=True)
class LayoutChoice:
    """How a run's live training sets go to its processes: the first ``per_process`` one per process, the last
    ``together`` in all processes at once (DDP)."""

    layout: str  # as asked: auto, per-process or ddp
    per_process: int
    together: int
    reason: str

    def line(self, size: int) -> str:
        """What rank 0 prints once."""
        how = [f"{self.per_process} one per process"] if self.per_process else []
        how += [f"{self.together} with all {size} processes together (DDP, each step's pairs split over them)"
                ] if self.together else []
        return f"training sets: {', then '.join(how)}: {self.reason} (--train-layout {self.layout})"

    def record(self) -> dict:
        return {"layout": self.layout, "per_process": self.per_process, "ddp": self.together}


def choose_layout(layout: str, n_sets: int, size: int, *, placed: bool = False) -> LayoutChoice:
    """The layout of ``n_sets`` live training sets over ``size`` processes; ``placed``: the model is placed over
    several devices (one process per node or group of GPUs), which DDP cannot train."""
    if placed and size > 1:
        if layout == "ddp":
            raise UserError("--train-layout ddp needs the whole model in each process, but --device-map places it "
                            "over several devices: use --train-layout per-process (or auto)")
        return LayoutChoice(layout, n_sets, 0, "the model is placed over several devices (--device-map), DDP needs "
                                               "it whole in each process")
    if size == 1 or layout == "per-process":
        return LayoutChoice(layout, n_sets, 0, "one process" if size == 1 else "as asked")
    if layout == "ddp":
        return LayoutChoice(layout, 0, n_sets, "as asked")
    if n_sets < size:
        return LayoutChoice(layout, 0, n_sets, f"fewer training sets ({n_sets}) than processes ({size})")
    tail = n_sets % size
    if tail:
        return LayoutChoice(layout, n_sets - tail, tail, f"{n_sets} sets on {size} processes: the last {tail} together "
                                                        f"rather than on {tail} process(es) while {size - tail} wait")
    return LayoutChoice(layout, n_sets, 0, f"{n_sets} sets on {size} processes, {n_sets // size} each")


_HIDDEN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
           "MV2_COMM_WORLD_SIZE")


def accelerate_as(device: str, *, together: bool) -> None:
    """Set accelerate (finetune's training loop) for the next training set: this process alone on ``device``
    (its own set), or together with every process of the launch (DDP over the process group genies/processes.py
    set up, which accelerate then uses as it is). torch's thread count is kept."""
    import torch
    from accelerate.state import PartialState

    threads = torch.get_num_threads()
    saved = {} if together else {name: os.environ.pop(name) for name in _HIDDEN if name in os.environ}
    had = os.environ.get("ACCELERATE_TORCH_DEVICE")
    os.environ["ACCELERATE_TORCH_DEVICE"] = device
    try:
        PartialState._reset_state()
        PartialState(cpu=device == "cpu")
    finally:
        os.environ.update(saved)
        if had is None:
            os.environ.pop("ACCELERATE_TORCH_DEVICE", None)
        else:
            os.environ["ACCELERATE_TORCH_DEVICE"] = had
        torch.set_num_threads(threads)
