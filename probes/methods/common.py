"""The small pieces of linear algebra that several methods share."""

from __future__ import annotations

import numpy as np

from probes.labels import Labels
from common.metrics import pair_correctness


def mass_mean(x: np.ndarray, is_best: np.ndarray) -> np.ndarray:
    """mean(x | preferred) - mean(x | dispreferred), along the first axis."""
    x = np.asarray(x, dtype=np.float64)
    return (x[is_best].mean(axis=0) - x[~is_best].mean(axis=0)).astype(np.float32)


def pair_differences(x: np.ndarray, labels: Labels) -> np.ndarray:
    """x[best] - x[other] for every training pair."""
    best, other = labels.pairs
    return x[best] - x[other]


def label_sign(scores: np.ndarray, labels: Labels) -> float:
    """+1 if the scores rank the preferred response first on most TRAINING pairs, else -1."""
    return 1.0 if pair_correctness(labels.margins(scores)).mean() >= 0.5 else -1.0


def pair_accuracy_per_column(scores: np.ndarray, labels: Labels) -> np.ndarray:
    """Pairwise accuracy (ties 0.5) of each column of ``scores`` (n_sequences, n_candidates)."""
    best, other = labels.pairs
    margins = scores[best] - scores[other]
    return ((margins > 0) + 0.5 * (margins == 0)).mean(axis=0)
