"""The one metrics module (DESIGN §8), shared by probes and finetune. Pure numpy / scipy.

Every method produces a score per sequence; a pair (best, other) is judged by its *margin*
score(best) - score(other). Accuracy counts a tie as 0.5. P(best) = sigmoid(margin / T).
AUROC, Brier and calibration count each pair in both orders, (P, label 1) and (1 - P,
label 0), so the labels are balanced and the numbers do not depend on which response of a
pair is listed first.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import rankdata

CALIBRATIONS = ("binned", "reference")


# ----------------------------------------------------------------------------- pairs


def pair_indices(example: np.ndarray, is_best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (best, other) pairs: k-1 pairs for an example with k responses, in sequence order.

    Returns ``(best_idx, other_idx)``, indices into the sequence arrays. Every example must have
    exactly one best response.
    """
    example = np.asarray(example)
    is_best = np.asarray(is_best).astype(bool)
    if example.shape != is_best.shape or example.ndim != 1:
        raise ValueError(f"example and is_best must be 1-D of equal length, got {example.shape} and {is_best.shape}")
    best_positions = np.flatnonzero(is_best)
    best_examples = example[best_positions]
    examples_with_best, counts = np.unique(best_examples, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"example {examples_with_best[counts > 1][0]} has {counts[counts > 1][0]} best responses")
    missing = np.setdiff1d(np.unique(example), examples_with_best)
    if missing.size:
        raise ValueError(f"{missing.size} example(s) have no best response (first: example {missing[0]})")
    order = np.argsort(best_examples, kind="stable")
    other_idx = np.flatnonzero(~is_best)
    slot = np.searchsorted(best_examples[order], example[other_idx])
    return best_positions[order][slot], other_idx


def pair_margins(scores: np.ndarray, example: np.ndarray, is_best: np.ndarray) -> np.ndarray:
    """score[best] - score[other] for every pair of :func:`pair_indices`."""
    best_idx, other_idx = pair_indices(example, is_best)
    scores = np.asarray(scores, dtype=np.float64)
    return scores[best_idx] - scores[other_idx]


# ----------------------------------------------------------------------------- temperature


def fit_temperature(margins: np.ndarray) -> float:
    """Platt-style temperature T > 0 for P(best) = sigmoid(margin / T), fitted on source margins.

    A one-parameter logistic fit (no intercept, so a zero margin stays at 0.5) with Platt's
    smoothed targets (n+1)/(n+2) and 1/(n+2): with both orders of every pair the classes are
    balanced, and the smoothing keeps the fit finite when the training pairs are separable.
    If the margins carry no positive signal the fit would want T <= 0; we then return a
    temperature so large that every P(best) is ~0.5.
    """
    m = np.asarray(margins, dtype=np.float64).ravel()
    m = m[np.isfinite(m)]
    scale = float(np.abs(m).max()) if m.size else 0.0
    if scale == 0.0:
        return 1.0
    target = (m.size + 1) / (m.size + 2)

    def slope(beta: float) -> float:  # d/dbeta of the mean cross-entropy; increasing in beta
        return float(np.mean((expit(beta * m) - target) * m))

    if slope(0.0) >= 0.0:
        return NO_SIGNAL_TEMPERATURE * scale
    hi = 1.0 / scale
    while slope(hi) < 0.0:
        hi *= 4.0
    beta = brentq(slope, 0.0, hi, xtol=1e-12 / scale, rtol=1e-10)
    return float(1.0 / beta)


NO_SIGNAL_TEMPERATURE = 1e6  # x the largest |margin|: fit_temperature's bound when the margins carry no signal
FLAT_PROBABILITY = 1e-6  # every |margin| / T below this: every P(best) is 0.5 to six places


def fit_degeneracy(margins: np.ndarray) -> str | None:
    """Why a fit on these training margins is degenerate, or None: constant scores (every training pair tied),
    or no separation of its own training pairs (mean margin <= 0, where ``fit_temperature`` returns its bound)."""
    m = np.asarray(margins, dtype=np.float64).ravel()
    m = m[np.isfinite(m)]
    if m.size == 0 or not np.abs(m).max() > 0:
        return "constant scores on its training pairs (every pair tied)"
    if m.mean() <= 0:
        return (f"no separation of its training pairs (mean training margin {m.mean():.3g} <= 0; calibration "
                "temperature at its bound)")
    return None


def score_degeneracy(margins: np.ndarray, temperature: float) -> str | None:
    """Why scores on an evaluation split are degenerate, or None: constant scores (every pair tied), or a
    temperature so large that every P(best) is 0.5 (Brier exactly 0.25)."""
    m = np.asarray(margins, dtype=np.float64).ravel()
    m = m[np.isfinite(m)]
    if m.size == 0 or not np.abs(m).max() > 0:
        return "constant scores (every pair tied)"
    if np.abs(m).max() / temperature < FLAT_PROBABILITY:
        return f"calibration temperature at its bound ({temperature:.3g}: every P(best) = 0.5)"
    return None


# ----------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    accuracy_ci_low: float
    accuracy_ci_high: float
    auroc: float
    brier: float
    rms_calibration_error: float
    n_pairs: int
    n_examples: int | None  # None when the caller gave no pair_example
    accuracy_se: float = float("nan")  # standard error, examples as clusters when pair_example is given


    def as_dict(self) -> dict:
        return asdict(self)


def pair_correctness(margins: np.ndarray) -> np.ndarray:
    """1 for a correct pair, 0.5 for a tie, 0 for a wrong one."""
    m = np.asarray(margins, dtype=np.float64)
    return (m > 0) + 0.5 * (m == 0)


def pair_probabilities(margins: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(best) = sigmoid(margin / temperature)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return expit(np.asarray(margins, dtype=np.float64) / temperature)


def both_orders(p_best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pair as (P, 1) and (1 - P, 0): probabilities and labels of the balanced set."""
    p = np.asarray(p_best, dtype=np.float64)
    return np.concatenate([p, 1.0 - p]), np.concatenate([np.ones(p.size), np.zeros(p.size)])


def auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks, ties count 0.5)."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(probs)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((np.asarray(probs, dtype=np.float64) - np.asarray(labels, dtype=np.float64)) ** 2))


def binned_rms_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """sqrt(sum_b w_b (mean label_b - mean prob_b)^2): equal-width bins on [0, 1], w_b = share of items."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    bins = np.clip((probs * n_bins).astype(np.int64), 0, n_bins - 1)  # 1.0 goes in the last bin
    counts = np.bincount(bins, minlength=n_bins)
    gap = (np.bincount(bins, labels, n_bins) - np.bincount(bins, probs, n_bins)) / np.maximum(counts, 1)
    return float(np.sqrt(np.sum(counts / probs.size * gap**2)))


def reference_rms_calibration_error(p_best: np.ndarray) -> float:
    """The GENIES reference formula (genies-reference.md §2.4), kept for comparison only.

    Random orientation per pair (Python ``random``, seed 42), 5 equal-width bins with q = 1.0
    dropped, bins with < 20 items skipped, each bin compared with the *global* label mean, and
    an unweighted mean over bins. NaN when no bin has 20 items.
    """
    rng = random.Random(42)
    p = np.asarray(p_best, dtype=np.float64)
    y = np.array([rng.choice([0, 1]) for _ in range(p.size)])
    q = np.where(y == 1, p, 1.0 - p)
    assignment = np.digitize(q, np.linspace(0, 1, 6))
    scores = [(y.mean() - q[assignment == b].mean()) ** 2 for b in range(1, 6) if (assignment == b).sum() >= 20]
    return float(np.sqrt(np.mean(scores))) if scores else float("nan")


@dataclass(frozen=True, eq=False)
class ExampleOutcomes:
    """Per example: its id, how many pairs it has and how many of them were judged right (ties 0.5).

    Enough to recompute the accuracy of any resample of examples: sum(correct) / sum(pairs).
    """

    example: np.ndarray
    pairs: np.ndarray
    correct: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(self.correct.sum() / self.pairs.sum())

    def __eq__(self, other) -> bool:
        return isinstance(other, ExampleOutcomes) and all(
            np.array_equal(a, b) for a, b in ((self.example, other.example), (self.pairs, other.pairs),
                                              (self.correct, other.correct)))

    __hash__ = None

    def as_dict(self) -> dict:
        return {"example": self.example.tolist(), "pairs": self.pairs.tolist(), "correct": self.correct.tolist()}

    @classmethod
    def from_dict(cls, record: dict) -> "ExampleOutcomes":
        example, pairs, correct = (np.asarray(record[k]) for k in ("example", "pairs", "correct"))
        if not (example.ndim == pairs.ndim == correct.ndim == 1 and example.size == pairs.size == correct.size):
            raise ValueError("example, pairs and correct must be equally long lists")
        return cls(example.astype(np.int64), pairs.astype(np.int64), correct.astype(np.float64))


def example_outcomes(margins: np.ndarray, pair_example: np.ndarray) -> ExampleOutcomes:
    """Per-pair margins -> per-example outcomes (examples in increasing id order)."""
    ids, cluster = np.unique(np.asarray(pair_example), return_inverse=True)
    correct = pair_correctness(np.asarray(margins, dtype=np.float64).ravel())
    return ExampleOutcomes(ids.astype(np.int64), np.bincount(cluster, minlength=ids.size).astype(np.int64),
                           np.bincount(cluster, correct, minlength=ids.size))


def _clusters(correct: np.ndarray, pair_example: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(correct sum, pair count) per example, or per pair without ``pair_example``."""
    if pair_example is None:
        return correct, np.ones_like(correct)
    _, cluster = np.unique(np.asarray(pair_example), return_inverse=True)
    return np.bincount(cluster, correct), np.bincount(cluster).astype(np.float64)


def ratio_standard_error(sums: np.ndarray, sizes: np.ndarray) -> float:
    """Standard error of sum(sums) / sum(sizes) with the clusters as independent units (delta method)."""
    n = sizes.size
    if n < 2:
        return float("nan")
    ratio = sums.sum() / sizes.sum()
    residual = sums - ratio * sizes
    return float(np.sqrt(n / (n - 1) * np.sum(residual**2)) / sizes.sum())


def bootstrap_ratio_replicates(sums: np.ndarray, sizes: np.ndarray, *, n_bootstrap: int, seed) -> np.ndarray:
    """sum(sums) / sum(sizes) over ``n_bootstrap`` resamples of the clusters (with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(sizes.size, np.full(sizes.size, 1.0 / sizes.size), size=n_bootstrap).astype(np.float64)
    return (draws @ sums) / (draws @ sizes)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval; NaN replicates (an empty resample) are left out."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_accuracy_ci(correct: np.ndarray, *, pair_example: np.ndarray | None = None, n_bootstrap: int = 1000,
                          seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``correct``, resampling examples (clusters) or pairs."""
    correct = np.asarray(correct, dtype=np.float64)
    if n_bootstrap <= 0 or correct.size == 0:
        return float("nan"), float("nan")
    sums, sizes = _clusters(correct, pair_example)
    return percentile_interval(bootstrap_ratio_replicates(sums, sizes, n_bootstrap=n_bootstrap, seed=seed), level)


def compute_metrics(margins: np.ndarray, *, temperature: float = 1.0, calibration: str = "binned", n_bins: int = 10,
                    n_bootstrap: int = 1000, seed: int = 0, pair_example: np.ndarray | None = None) -> Metrics:
    """Accuracy (+ bootstrap CI), AUROC, Brier and RMS calibration error from per-pair margins.

    ``calibration="binned"`` is the DESIGN formula with ``n_bins`` count-weighted bins;
    ``"reference"`` reproduces the reference code's formula (its own fixed 5 bins).
    ``pair_example`` (example id per pair) makes the bootstrap resample examples, not pairs.
    """
    m = np.asarray(margins, dtype=np.float64).ravel()
    if m.size == 0:
        raise ValueError("no pairs to score")
    if not np.isfinite(m).all():
        raise ValueError(f"{int((~np.isfinite(m)).sum())} non-finite margin(s)")
    if calibration not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {calibration!r} (choose from {', '.join(CALIBRATIONS)})")
    if pair_example is not None and len(pair_example) != m.size:
        raise ValueError(f"pair_example has {len(pair_example)} entries for {m.size} pairs")

    correct = pair_correctness(m)
    p_best = pair_probabilities(m, temperature)
    probs, labels = both_orders(p_best)
    if calibration == "binned":
        rms = binned_rms_calibration_error(probs, labels, n_bins)
    else:
        rms = reference_rms_calibration_error(p_best)
    low, high = bootstrap_accuracy_ci(correct, pair_example=pair_example, n_bootstrap=n_bootstrap, seed=seed)
    return Metrics(
        accuracy=float(correct.mean()),
        accuracy_ci_low=low,
        accuracy_ci_high=high,
        auroc=auroc(probs, labels),
        brier=brier(probs, labels),
        rms_calibration_error=rms,
        n_pairs=int(m.size),
        n_examples=None if pair_example is None else int(np.unique(np.asarray(pair_example)).size),
        accuracy_se=ratio_standard_error(*_clusters(correct, pair_example)),
    )

