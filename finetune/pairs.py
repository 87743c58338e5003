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
    """A step's B pairs -> its passes: each pass the shared prompts of some pairs and their
    continuation rows (chosen, rejected, chosen, ...), at most ``max_tokens`` padded tokens per
    pass (a pair longer than that gets a pass of its own)."""

    def __init__(self, pad_id: int, max_tokens: int | None = None):
        self.pad_id, self.max_tokens = pad_id, max_tokens

    def __call__(self, pairs: list[TrainingPair]) -> list[dict[str, torch.Tensor]]:
        return [collate_groups([(p.chosen, p.rejected) for p in part], self.pad_id) for part in self.passes(pairs)]

    def passes(self, pairs: list[TrainingPair]) -> list[list[TrainingPair]]:
        parts: list[list[TrainingPair]] = [[]]
        for pair in pairs:
            if parts[-1] and self.max_tokens and padded_tokens(parts[-1] + [pair]) > self.max_tokens:
                parts.append([])
            parts[-1].append(pair)
        return parts


def padded_tokens(pairs: list[TrainingPair]) -> int:
    """Padded tokens of one pass over ``pairs``: a prompt row per pair, two continuation rows."""
    prompt = max(len(p.chosen.prompt_ids) for p in pairs)
    continuation = max(len(s.continuation_ids) for p in pairs for s in (p.chosen, p.rejected))
    return len(pairs) * (prompt + 2 * continuation)
