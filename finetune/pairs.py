"""Training pairs: one (best, other) pair per training example, drawn with a seed.

The reference draws the dispreferred response with an unseeded ``random.choice``; here the
draw is a function of the seed, so a run can be repeated exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from finetune.sequences import EncodedSplit, TokenSequence
from finetune.shared_prompts import collate_groups


@dataclass(frozen=True)
class TrainingPair:
    chosen: TokenSequence
    rejected: TokenSequence


def sample_training_pairs(encoded: EncodedSplit, seed: int) -> list[TrainingPair]:
    """For each example, its best response against one other response chosen at random."""
    rng = random.Random(seed)
    by_example: dict[int, list[TokenSequence]] = {}
    for sequence in encoded.sequences:
        by_example.setdefault(sequence.example, []).append(sequence)
    pairs = []
    for example in sorted(by_example):
        sequences = by_example[example]
        best = next(s for s in sequences if s.is_best)
        others = [s for s in sequences if not s.is_best]
        pairs.append(TrainingPair(best, rng.choice(others)))
    return pairs


class PairCollator:
    """A batch of B pairs -> B shared prompts and 2B continuation rows: chosen, rejected, chosen, ..."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, pairs: list[TrainingPair]) -> dict[str, torch.Tensor]:
        return collate_groups([(p.chosen, p.rejected) for p in pairs], self.pad_id)
