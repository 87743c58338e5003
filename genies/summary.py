"""Aggregates over result rows: per-method means, group means, correlations. Pure functions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from genies.generalization import ZERO_SHOT, ResultRow


def mean(values: Iterable[float | None]) -> float:
    """Mean of the values that are present; NaN when none is."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else math.nan


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r; NaN with fewer than two points or when either side is constant."""
    if len(x) != len(y):
        raise ValueError("pearson needs equally long sequences")
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / math.sqrt((a @ a) * (b @ b)))


def methods_in_order(rows: Iterable[ResultRow]) -> list[str]:
    return list(dict.fromkeys(r.method for r in rows))


@dataclass(frozen=True)
class MethodSummary:
    method: str
    n_shifts: int
    generalization_accuracy: float
    source_accuracy: float
    zero_shot_accuracy: float
    differential_elicitation: float
    elicitation: float
    auroc: float
    brier: float
    rms_calibration_error: float


def method_summaries(rows: Sequence[ResultRow]) -> list[MethodSummary]:
    """Means over the manifest's shifts, one per method, in the order methods first appear."""
    out = []
    for method in methods_in_order(rows):
        mine = [r for r in rows if r.method == method]
        out.append(MethodSummary(
            method=method,
            n_shifts=len({(r.source, r.target) for r in mine}),
            **{name: mean(getattr(r, name) for r in mine) for name in (
                "generalization_accuracy", "source_accuracy", "zero_shot_accuracy", "differential_elicitation",
                "elicitation", "auroc", "brier", "rms_calibration_error")},
        ))
    return out


@dataclass(frozen=True)
class Correlation:
    method: str  # a method name, or "all" for the pooled points
    n: int
    pearson_r: float


def zero_shot_correlation(rows: Sequence[ResultRow]) -> Correlation:
    """Generalization vs zero-shot accuracy across shifts, pooled over every method but zero-shot
    itself (whose generalization *is* its zero-shot accuracy); the paper's r = 0.7."""
    points = [(r.zero_shot_accuracy, r.generalization_accuracy) for r in rows if r.method != ZERO_SHOT]
    return Correlation("all", len(points), pearson([p[0] for p in points], [p[1] for p in points]))


@dataclass(frozen=True)
class RunComparison:
    method: str  # a method name, or "all" for every (shift, method) the runs share
    n: int
    pearson_r: float
    mean_a: float
    mean_b: float


def compare_runs(rows_a: Sequence[ResultRow], rows_b: Sequence[ResultRow], metric: str = "generalization_accuracy") -> list[RunComparison]:
    """Per-method Pearson r of a per-shift metric between two runs (e.g. two model sizes, the
    paper's scaling analysis), then the same pooled over every shared (shift, method) as "all"."""
    b = {(r.source, r.target, r.method): getattr(r, metric) for r in rows_b}
    shared = [(getattr(r, metric), b[(r.source, r.target, r.method)], r.method)
              for r in rows_a if (r.source, r.target, r.method) in b]

    def compared(name: str, pairs: list[tuple[float, float, str]]) -> RunComparison:
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        return RunComparison(name, len(pairs), pearson(xs, ys), mean(xs), mean(ys))

    methods = list(dict.fromkeys(m for _, _, m in shared))
    return [compared(m, [p for p in shared if p[2] == m]) for m in methods] + [compared("all", shared)]
