"""What every method shares: the fit configuration and the small pieces of linear algebra."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from probes.labels import Labels
from probes.metrics import pair_correctness


@dataclass(frozen=True)
class FitConfig:
    seed: int = 0
    normalize: str | None = None  # none | center | standardize; None = the method's default
    alpha: float = 1.0  # cra: contrast = h_yes - alpha * h_no
    top_k: int = 16  # lat-stim: layers kept; head-wise variants: heads kept
    val_fraction: float = 0.3  # train-internal validation split that picks layers / heads
    logreg_c: float = 1.0  # inverse L2 strength of logreg
    ccs_restarts: int = 10
    ccs_max_iter: int = 100  # L-BFGS iterations (all restarts optimised jointly)
    ccs_l2: float = 1e-3  # keeps the weights finite when the contrast pairs are separable

    def as_dict(self) -> dict:
        return asdict(self)


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
