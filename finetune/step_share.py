"""One optimizer step's pairs, as one process sees them, and how much each of its passes weighs.

Alone (one process, or `accelerate launch -m finetune train`, where each process draws ``--batch-size`` pairs
of its own), a process's passes are weighted by their share of its pairs: its loss is its own pairs' mean, and
DDP averages those means over the processes.

Split (``TrainConfig.split_steps``: `genies run` training one set in several processes), every process draws
the same shuffled step that one process would draw (the same seeded loader), collates only its share of it (a
balanced contiguous slice) and weights each pass by its pairs over the step's pairs, times the number of
processes, since DDP averages the processes' gradients: the averaged gradient is then the gradient of the mean
loss over the whole step's pairs, that of one process up to float rounding. A process whose share is empty (a
step of fewer pairs than processes) runs the step's first pair with weight 0, so that it still takes part in
DDP's all-reduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from finetune.pairs import PairCollator, TrainingPair

Batch = dict[str, torch.Tensor]


def pairs_in(batch: Batch) -> int:
    return len(batch["group"]) // 2


@dataclass(frozen=True)
class StepShare:
    """This process's passes of one step, each pass's weight in the step's loss, the factor its gradient is
    multiplied by (DDP divides by the processes), and how the processes' losses combine into the step's loss."""

    passes: list[Batch]
    weights: list[float]
    gradient_scale: float = 1.0
    loss_reduction: str = "mean"  # "mean": every process reports its own pairs' mean; "sum": its part of the step's

    @classmethod
    def alone(cls, passes: list[Batch]) -> "StepShare":
        counts = [pairs_in(batch) for batch in passes]
        return cls(passes, [count / sum(counts) for count in counts])


def share_of(n: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s balanced contiguous slice of ``n`` items over ``size`` processes (sizes differ by 1 at most)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class SplitCollator:
    """The loader's collate function for split steps: a whole step's pairs in, this process's ``StepShare`` out."""

    def __init__(self, collator: PairCollator, rank: int, size: int):
        self.collator, self.rank, self.size = collator, rank, size

    def __call__(self, pairs: list[TrainingPair]) -> StepShare:
        mine = pairs[share_of(len(pairs), self.rank, self.size)]
        passes = self.collator(mine or pairs[:1])
        weights = [pairs_in(batch) / len(pairs) if mine else 0.0 for batch in passes]
        return StepShare(passes, weights, gradient_scale=float(self.size), loss_reduction="sum")
