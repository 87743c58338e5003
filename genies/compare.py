"""`genies compare`: per-shift results of two runs side by side (the paper's scaling analysis), with
bootstrap intervals on each correlation and on each mean difference (B - A)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import UserError
from genies.evaluations import read_row_evaluations
from genies.results_csv import load_run, results_path
from genies.run_info import read_run_info
from genies.summary import RunComparison, compare_runs
from genies.uncertainty import N_BOOTSTRAP, Interval, RunBootstrap, interval, shift_counts, weighted_means, weighted_pearson


@dataclass(frozen=True)
class RunComparisonInterval(RunComparison):
    """A RunComparison with 95% bootstrap intervals for r and for the mean difference."""

    r_low: float
    r_high: float
    difference: float  # mean_b - mean_a over the shared shifts
    difference_low: float
    difference_high: float

    @property
    def resolved(self) -> bool:
        return Interval(self.difference, self.difference_low, self.difference_high).excludes(0.0)


def compare_run_dirs(run_a: Path, run_b: Path, metric: str = "generalization_accuracy", *,
                     n_bootstrap: int = N_BOOTSTRAP) -> list[RunComparisonInterval]:
    """Per-method and pooled Pearson r and mean difference of ``metric`` over the (shift, method) rows both
    runs hold. Shifts are resampled jointly for both runs; examples within each run (seeded by dataset, so two
    runs on the same test examples share their resamples)."""
    rows_a, rows_b = load_run(run_a), load_run(run_b)
    points = compare_runs(rows_a, rows_b, metric)
    if points[-1].n == 0:
        raise UserError(f"{results_path(run_a)} and {results_path(run_b)} share no (shift, method) rows")
    seed = int(read_run_info(run_a).get("seed", 0))
    boots = [RunBootstrap(rows, read_row_evaluations(run), n_bootstrap=n_bootstrap, seed=seed)
             for rows, run in ((rows_a, run_a), (rows_b, run_b))]
    in_b = {r.key for r in rows_b}
    shared = [r for r in rows_a if r.key in in_b]
    shifts = list(dict.fromkeys(r.shift for r in shared))
    counts = shift_counts(len(shifts), n_bootstrap, seed, "compare")
    out = []
    for point in points:
        mine = [r for r in shared if point.method in ("all", r.method)]
        a, b = (np.concatenate([boot.values(r.method, metric, [r.shift])[1] for r in mine], axis=1) for boot in boots)
        weights = counts[:, [shifts.index(r.shift) for r in mine]]
        r = interval(point.pearson_r, weighted_pearson(a, b, weights))
        difference = interval(point.mean_b - point.mean_a, weighted_means(b - a, weights))
        out.append(RunComparisonInterval(**vars(point), r_low=r.low, r_high=r.high, difference=difference.estimate,
                                         difference_low=difference.low, difference_high=difference.high))
    return out


def software_note(run_a: Path, run_b: Path) -> str | None:
    """A line saying which recorded library versions or toolkit commit differ between two runs, or None."""
    from actstore.software import software_differences

    differences = software_differences(read_run_info(run_a).get("software"), read_run_info(run_b).get("software"))
    return f"note: the runs differ in software: {'; '.join(differences)}" if differences else None

