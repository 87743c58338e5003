"""Which response of each example is preferred, the pairs that follow, and train-internal splits."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from common.metrics import pair_indices


@dataclass(frozen=True, eq=False)
class Labels:
    """Per-sequence example id and preference (sequences ordered by example, then response)."""

    example: np.ndarray
    is_best: np.ndarray
    origin: np.ndarray | None = None  # per sequence, the example it was copied from (a resample); None: its own

    @classmethod
    def from_sequences(cls, sequences: dict[str, np.ndarray]) -> "Labels":
        return cls(np.asarray(sequences["example"]), np.asarray(sequences["score"]) == 1.0)

    def __len__(self) -> int:
        return len(self.example)

    @cached_property
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(best_idx, other_idx) for every (best, other) pair."""
        return pair_indices(self.example, self.is_best)

    @property
    def pair_example(self) -> np.ndarray:
        return self.example[self.pairs[0]]

    def margins(self, scores: np.ndarray) -> np.ndarray:
        best, other = self.pairs
        scores = np.asarray(scores, dtype=np.float64)
        return scores[best] - scores[other]

    def subset(self, rows: np.ndarray) -> "Labels":
        return Labels(self.example[rows], self.is_best[rows], None if self.origin is None else self.origin[rows])

    @property
    def origins(self) -> np.ndarray:
        """The example each sequence comes from: copies of one example in a resample share it."""
        return self.example if self.origin is None else self.origin


def split_by_example(labels: Labels, val_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sequence rows of a seeded (fit, validation) split that keeps each example's responses together (and the
    copies of one example in a resample: ``Labels.origins``)."""
    examples = np.unique(labels.origins)
    if len(examples) < 2:
        raise ValueError("a validation split needs at least 2 examples")
    n_val = min(max(1, round(val_fraction * len(examples))), len(examples) - 1)
    val_examples = np.random.default_rng(seed).choice(examples, size=n_val, replace=False)
    is_val = np.isin(labels.origins, val_examples)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)

