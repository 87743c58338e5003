"""`genies compare`: per-shift results of two runs side by side (the paper's scaling analysis)."""

from __future__ import annotations

from pathlib import Path

from actstore.errors import UserError
from genies.results_csv import load_run, results_path
from genies.summary import RunComparison, compare_runs


def compare_run_dirs(run_a: Path, run_b: Path, metric: str = "generalization_accuracy") -> list[RunComparison]:
    """Per-method and pooled Pearson r of ``metric`` over the (shift, method) pairs both runs hold."""
    comparisons = compare_runs(load_run(run_a), load_run(run_b), metric)
    if comparisons[-1].n == 0:
        raise UserError(f"{results_path(run_a)} and {results_path(run_b)} share no (shift, method) rows")
    return comparisons
