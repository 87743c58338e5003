"""Bootstrap intervals for the numbers a run reports. Pure functions of the outcomes; seeded.

Two levels, as the data were sampled: shifts, then test examples within a shift.

- Examples: each tested-on dataset gets one set of ``n_bootstrap`` resamples of its test examples
  (counts of draws with replacement over the union of example ids seen on it), seeded by the run's seed and the
  dataset's name. Every evaluation on that dataset uses the same resamples, so two methods tested
  on one target are compared example by example (a paired bootstrap), and generalization and
  zero-shot move together in DE. Examples, not pairs, are resampled: an example's pairs share a
  prompt.
- Shifts: replicate b draws the manifest's shifts with replacement (counts, seeded by
  the seed and a name for the set of shifts) and averages each shift's replicate-b value with
  those counts. One draw per set of shifts, shared by every method: method means and their paired
  differences come from the same resamples.

- Refits: an evaluation with refits (genies/refits.py) draws one of them per replicate, the same one for every
  evaluation of its fit, and carries it through the same example and shift resamples (``with_refits``), so that
  intervals and paired differences hold the fit's own variability; a chance baseline's draws are its directions.

TTC is the accuracy of the method that was best on the reference, resampled over the reference's
test examples; which method that is stays fixed (re-taking the maximum per replicate would bias
it upwards). Intervals are percentile intervals at ``LEVEL``. A row whose evaluations kept no
per-example outcomes (a run made before they were kept) contributes its point value to every
replicate: its own interval is unknown (NaN) and means over it resample shifts only.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np

from genies.generalization import DIRECTIONS, INTERVAL_METRICS, ZERO_SHOT, Evaluation, ResultRow, RowEvaluations
from common.metrics import percentile_interval

N_BOOTSTRAP = 2000
LEVEL = 0.95
Shift = tuple[str, str]


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """A generator that depends only on the seed and the names (stable across runs and Python versions)."""
    return np.random.default_rng([seed, *(zlib.crc32(name.encode("utf-8")) for name in names)])


def resample_counts(rng: np.random.Generator, n: int, n_bootstrap: int) -> np.ndarray:
    """(n_bootstrap, n): how often each of n units is drawn when n are drawn with replacement, per replicate.
    (Drawing indices and counting them is much faster than numpy's multinomial for large n.)"""
    drawn = rng.integers(0, n, size=(n_bootstrap, n)) + n * np.arange(n_bootstrap)[:, None]
    return np.bincount(drawn.ravel(), minlength=n_bootstrap * n).reshape(n_bootstrap, n).astype(np.float64)


def example_replicates(evaluations: Iterable[Evaluation], n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, np.ndarray]:
    """Accuracy of every evaluation (by ``Evaluation.key``) on each example resample of its dataset, with the
    fit's own variability where the evaluation has refits (``with_refits``).

    Evaluations without outcomes are left out. Datasets are resampled one at a time, so memory
    holds one dataset's resample counts at once.
    """
    by_dataset: dict[str, dict[str, Evaluation]] = {}
    for evaluation in evaluations:
        if evaluation.outcomes is not None:
            by_dataset.setdefault(evaluation.tested_on, {})[evaluation.key] = evaluation
    out: dict[str, np.ndarray] = {}
    for dataset in sorted(by_dataset):
        group = by_dataset[dataset]
        columns = [outcomes for e in group.values() for outcomes in (e.outcomes, *(e.refit_outcomes or ()))]
        ids = np.unique(np.concatenate([outcomes.example for outcomes in columns]))
        draws = resample_counts(rng_for(seed, "examples", dataset), ids.size, n_bootstrap)
        sums, sizes = np.zeros((ids.size, len(columns))), np.zeros((ids.size, len(columns)))
        for column, outcomes in enumerate(columns):
            where = np.searchsorted(ids, outcomes.example)
            sums[where, column], sizes[where, column] = outcomes.correct, outcomes.pairs
        numerator, denominator = draws @ sums, draws @ sizes  # one matrix product for all of the dataset's evaluations
        ratios = np.divide(numerator, denominator, out=np.full(numerator.shape, np.nan), where=denominator > 0)
        start = 0
        for key, evaluation in group.items():
            width = 1 + len(evaluation.refit_outcomes or ())
            out[key] = with_refits(evaluation, ratios[:, start:start + width], seed)
            start += width
    return out


def with_refits(evaluation: Evaluation, ratios: np.ndarray, seed: int) -> np.ndarray:
    """(B,) replicates of one evaluation from ``ratios`` (B, 1 + refits): the fit's, then each refit's accuracy on
    each example resample.

    Replicate b draws refit r(b), the same draw for every evaluation of one fit (method, training set), so that
    its source and target accuracies move together. Refits on resampled training data: the fit's accuracy plus
    refit r(b)'s deviation from the refits' mean on the same resample (scaled by sqrt(R / (R - 1)), the spread of
    R refits about their own mean being that much narrower), so that the interval widens by the fit's
    variability without shifting to where fits on fewer distinct examples land (clipped to [0, 1], as accuracies
    are). A chance baseline's directions:
    direction r(b) itself (the fit's among them), whose mean is the point value.
    """
    n_refits = ratios.shape[1] - 1
    if not n_refits:
        return ratios[:, 0]
    rows = np.arange(ratios.shape[0])
    if evaluation.refits == DIRECTIONS:
        drawn = rng_for(seed, "refits", evaluation.method, evaluation.trained_on).integers(0, n_refits + 1, ratios.shape[0])
        return ratios[rows, drawn]
    drawn = rng_for(seed, "refits", evaluation.method, evaluation.trained_on).integers(0, n_refits, ratios.shape[0])
    refits = ratios[:, 1:]
    deviation = refits[rows, drawn] - refits.mean(axis=1)
    scale = math.sqrt(n_refits / (n_refits - 1)) if n_refits > 1 else 0.0  # one refit shows no spread
    return np.clip(ratios[:, 0] + deviation * scale, 0.0, 1.0)


def shift_counts(n_shifts: int, n_bootstrap: int, seed: int, name: str) -> np.ndarray:
    """(n_bootstrap, n_shifts): how often each shift is drawn in each replicate."""
    return resample_counts(rng_for(seed, "shifts", name), n_shifts, n_bootstrap)


def weighted_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per replicate: the mean of ``values`` (B, S) weighted by ``counts`` (B, S); NaN cells are skipped."""
    present = ~np.isnan(values)
    weights = counts * present
    total = weights.sum(axis=1)
    sums = (np.where(present, values, 0.0) * weights).sum(axis=1)
    return np.divide(sums, total, out=np.full(total.shape, np.nan), where=total > 0)


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per replicate (rows): Pearson r of x and y with non-negative weights; NaN where undefined."""
    total = weights.sum(axis=1, keepdims=True)
    mx = (weights * x).sum(axis=1, keepdims=True) / total
    my = (weights * y).sum(axis=1, keepdims=True) / total
    dx, dy = x - mx, y - my
    cov = (weights * dx * dy).sum(axis=1)
    var = (weights * dx * dx).sum(axis=1) * (weights * dy * dy).sum(axis=1)
    return np.divide(cov, np.sqrt(var), out=np.full(cov.shape, np.nan), where=var > 1e-24)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    @property
    def known(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def excludes(self, value: float) -> bool:
        return self.known and not (self.low <= value <= self.high)


def interval(estimate: float, replicates: np.ndarray) -> Interval:
    return Interval(float(estimate), *percentile_interval(replicates, LEVEL))


@dataclass(frozen=True)
class PairedDifference:
    """mean over shared shifts of (a - b) for one metric, with its paired bootstrap interval."""

    a: str
    b: str
    metric: str
    n_shifts: int
    difference: Interval
    a_wins: int  # shifts where a's value is higher
    b_wins: int
    ties: int

    @property
    def resolved(self) -> bool:
        return self.difference.excludes(0.0)


class RunBootstrap:
    """Replicates of every row's accuracies and ratios, and intervals built from them."""

    def __init__(self, rows: Sequence[ResultRow], evaluations: Mapping[tuple[str, str, str], RowEvaluations] | None = None,
                 *, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, keep_degenerate: bool = False):
        """Means, differences and correlations count the rows of degenerate fits only with ``keep_degenerate``;
        every row keeps its own interval."""
        self.n_bootstrap, self.seed = n_bootstrap, seed
        self.rows = list(rows)
        self.counted = counted_rows(self.rows, keep_degenerate)
        self.shifts: list[Shift] = list(dict.fromkeys(r.shift for r in self.rows))
        self.methods = list(dict.fromkeys(r.method for r in self.rows))
        evaluations = evaluations or {}
        replicates = example_replicates(
            (e for row_evaluations in evaluations.values() for e in vars(row_evaluations).values()), n_bootstrap, seed)
        self._replicates: dict[tuple[Shift, str], dict[str, np.ndarray]] = {}
        self.rows_with_outcomes = 0
        for row in self.rows:
            found = evaluations.get(row.key)
            parts = None if found is None else [replicates.get(e.key) for e in
                                                 (found.generalization, found.source, found.zero_shot, found.target_tuned)]
            if parts is None or any(p is None for p in parts):
                self._replicates[(row.shift, row.method)] = {m: np.full(n_bootstrap, np.nan) for m in INTERVAL_METRICS}
                continue
            self.rows_with_outcomes += 1
            generalization, source, zero_shot, ttc = parts
            with np.errstate(divide="ignore", invalid="ignore"):  # a replicate whose TTC resample is 0: inf / NaN
                self._replicates[(row.shift, row.method)] = {
                    "generalization_accuracy": generalization, "source_accuracy": source,
                    "zero_shot_accuracy": zero_shot,
                    "target_tuned_capability": ttc, "differential_elicitation": (generalization - zero_shot) / ttc,
                    "elicitation": generalization / ttc}

    @property
    def example_level(self) -> bool:
        """Whether every row's examples are resampled (else means resample shifts only)."""
        return self.rows_with_outcomes == len(self.rows)

    def row_interval(self, row: ResultRow, metric: str) -> Interval:
        return interval(getattr(row, metric), self._replicates[(row.shift, row.method)][metric])

    def with_intervals(self, row: ResultRow) -> ResultRow:
        """The row with its `<metric>_low` / `_high` fields filled in (None where unknown)."""
        bounds = {}
        for metric in INTERVAL_METRICS:
            found = self.row_interval(row, metric)
            bounds[f"{metric}_low"] = found.low if found.known else None
            bounds[f"{metric}_high"] = found.high if found.known else None
        return replace(row, **bounds)

    def values(self, method: str, metric: str, shifts: Sequence[Shift]) -> tuple[np.ndarray, np.ndarray]:
        """(observed (S,), replicates (B, S)) over ``shifts``; NaN where the method lacks a shift.

        A row without outcomes contributes its observed value to every replicate."""
        by_shift = {r.shift: r for r in self.counted if r.method == method}
        observed = np.array([_value(by_shift.get(s), metric) for s in shifts])
        columns = [self._point(by_shift[s], metric) if s in by_shift else np.full(self.n_bootstrap, np.nan)
                   for s in shifts]
        return observed, np.stack(columns, axis=1)

    def _counts(self, shifts: Sequence[Shift], name: str) -> np.ndarray:
        return shift_counts(len(shifts), self.n_bootstrap, self.seed, name)

    def mean_interval(self, method: str, metric: str, shifts: Sequence[Shift] | None = None, name: str = "all") -> Interval:
        """Mean over ``shifts`` (default: all) with its two-level interval; ``name`` seeds the shift draws."""
        shifts = list(self.shifts if shifts is None else shifts)
        if not shifts:
            return Interval(math.nan, math.nan, math.nan)
        observed, values = self.values(method, metric, shifts)
        estimate = float(np.nanmean(observed)) if not np.isnan(observed).all() else math.nan
        return interval(estimate, weighted_means(values, self._counts(shifts, name)))

    def difference(self, a: str, b: str, metric: str = "generalization_accuracy") -> PairedDifference:
        """a - b averaged over the shifts both have, resampling shifts and examples jointly."""
        observed_a, values_a = self.values(a, metric, self.shifts)
        observed_b, values_b = self.values(b, metric, self.shifts)
        observed = observed_a - observed_b
        shared = ~np.isnan(observed)
        estimate = float(observed[shared].mean()) if shared.any() else math.nan
        found = interval(estimate, weighted_means(values_a - values_b, self._counts(self.shifts, "all")))
        return PairedDifference(a, b, metric, int(shared.sum()), found, int((observed[shared] > 0).sum()),
                                int((observed[shared] < 0).sum()), int((observed[shared] == 0).sum()))

    def differences(self, metric: str = "generalization_accuracy") -> list[PairedDifference]:
        """Every pair of methods, in the order they first appear."""
        return [self.difference(a, b, metric) for i, a in enumerate(self.methods) for b in self.methods[i + 1:]]

    def zero_shot_correlation(self, method: str | None = None) -> Interval:
        """Pearson r of generalization vs zero-shot over (shift, method) points: one method's over shifts (the
        paper's statistic), or (None) pooled over every method but zero-shot."""
        points = [r for r in self.counted if r.method != ZERO_SHOT and method in (None, r.method)]
        if len(points) < 2:
            return Interval(math.nan, math.nan, math.nan)
        x = np.stack([self._point(r, "zero_shot_accuracy") for r in points], axis=1)
        y = np.stack([self._point(r, "generalization_accuracy") for r in points], axis=1)
        counts = self._counts(self.shifts, "all")
        weights = counts[:, [self.shifts.index(r.shift) for r in points]]
        estimate = weighted_pearson(np.array([[r.zero_shot_accuracy for r in points]]),
                                    np.array([[r.generalization_accuracy for r in points]]), np.ones((1, len(points))))
        return interval(float(estimate[0]), weighted_pearson(x, y, weights))

    def _point(self, row: ResultRow, metric: str) -> np.ndarray:
        """The row's replicates of ``metric``; its observed value in every replicate when it kept no outcomes."""
        replicate = self._replicates[(row.shift, row.method)][metric]
        return np.full(self.n_bootstrap, _value(row, metric)) if np.isnan(replicate).all() else replicate


def counted_rows(rows: Sequence[ResultRow], keep_degenerate: bool = False) -> list[ResultRow]:
    """The rows that means, differences and correlations count: all but those of degenerate fits (whose numbers
    sit at chance by construction), unless ``keep_degenerate``."""
    return [r for r in rows if keep_degenerate or not r.degenerate]


def shift_correlation(points: Sequence[tuple[Shift, float, float]], shifts: Sequence[Shift], *,
                      n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, name: str = "all") -> Interval:
    """Pearson r of fixed (x, y) points with an interval from resampling their shifts only (e.g. the
    paper's published figures, which come without per-example outcomes)."""
    if len(points) < 2:
        return Interval(math.nan, math.nan, math.nan)
    shifts = list(shifts)
    x = np.array([[p[1] for p in points]])
    y = np.array([[p[2] for p in points]])
    weights = shift_counts(len(shifts), n_bootstrap, seed, name)[:, [shifts.index(p[0]) for p in points]]
    estimate = weighted_pearson(x, y, np.ones_like(x))[0]
    return interval(float(estimate), weighted_pearson(np.repeat(x, n_bootstrap, 0), np.repeat(y, n_bootstrap, 0), weights))


def _value(row: ResultRow | None, metric: str) -> float:
    value = None if row is None else getattr(row, metric)
    return math.nan if value is None else float(value)
