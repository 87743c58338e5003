"""Degenerate fits (their numbers sit at chance by construction) are listed and counted per method, and left
out of every mean, difference and correlation of the report and of compare; --keep-degenerate puts them back."""

from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from cli import genies
from conftest import write_vouched_results
from genies.compare import compare_runs_in
from genies.report import write_report
from test_genies_report import synthetic_rows

DEGENERATE = "constant scores on its training pairs"


def with_degenerate_lat(rows, n=5):
    """The first ``n`` lat rows made degenerate, at chance."""
    marked, seen = [], 0
    for row in rows:
        if row.method == "lat" and seen < n:
            seen += 1
            row = replace(row, degenerate=DEGENERATE, generalization_accuracy=0.5)
        marked.append(row)
    return marked


@pytest.fixture
def run_dir(tmp_path):
    write_vouched_results(tmp_path / "run", with_degenerate_lat(synthetic_rows()), model="tiny-random")
    return tmp_path / "run"


def test_the_report_leaves_degenerate_rows_out_of_its_means_and_says_how_many(run_dir):
    rows = with_degenerate_lat(synthetic_rows())
    kept = [r.generalization_accuracy for r in rows if r.method == "lat" and not r.degenerate]
    report = write_report(run_dir)
    lat = next(s for s in report.summaries if s.method == "lat")
    assert lat.n_shifts == len(kept) == 10 and lat.generalization_accuracy == pytest.approx(np.mean(kept))
    assert report.bootstrap.mean_interval("lat", "generalization_accuracy").estimate == pytest.approx(np.mean(kept))
    text = report.path.read_text()
    assert "Degenerate rows: lat 5 of 15 shifts" in text and "leave them out (`--keep-degenerate`" in text
    assert text.count("**degenerate**") >= 5  # still listed, shift by shift

    every = [r.generalization_accuracy for r in rows if r.method == "lat"]
    with_them = write_report(run_dir, keep_degenerate=True)
    lat = next(s for s in with_them.summaries if s.method == "lat")
    assert lat.n_shifts == 15 and lat.generalization_accuracy == pytest.approx(np.mean(every))
    assert "count them (`--keep-degenerate`)" in with_them.path.read_text()
    cli = CliRunner().invoke(genies, ["report", str(run_dir), "--keep-degenerate"])
    assert cli.exit_code == 0, cli.output


def test_compare_leaves_them_out_of_its_correlations_and_means(run_dir, tmp_path):
    write_vouched_results(tmp_path / "other", synthetic_rows(scale=0.5, offset=0.2), model="other")
    comparison = compare_runs_in([run_dir, tmp_path / "other"], n_bootstrap=200)
    lat = next(c for c in comparison.pairs[0].comparisons if c.method == "lat")
    assert lat.n == 10
    kept = compare_runs_in([run_dir, tmp_path / "other"], n_bootstrap=200, keep_degenerate=True)
    assert next(c for c in kept.pairs[0].comparisons if c.method == "lat").n == 15
