"""`genies compare` over two or more synthetic run directories: files, plots, left-out shifts, warnings."""

import csv

import pytest
from click.testing import CliRunner

from cli import genies
from genies.compare_report import write_comparison
from genies.generalization import ZERO_SHOT, ResultRow, differential_elicitation, elicitation
from conftest import write_vouched_results
from manifests import load_manifest
from probes.sweep import VALIDATION, SweepRow, write_csv

SHIFTS = load_manifest("genies")


def run_dir(path, *, model, n_layers, shifts=SHIFTS[:6], methods=(ZERO_SHOT, "mms", "lat"), scale=1.0, offset=0.0,
            limit=20, degenerate="", **info):
    """A run directory as `genies run` leaves it (results.csv, run.json), with made-up accuracies."""
    rows = []
    for i, shift in enumerate(shifts):
        zero_shot, ttc = 0.3 + 0.05 * i, 0.9
        for k, method in enumerate(methods):
            gen = zero_shot if method == ZERO_SHOT else min(1.0, zero_shot * scale + offset + 0.03 * k * (i % 2))
            layer = None if method == ZERO_SHOT else (n_layers * (k + i)) // (len(methods) + len(shifts))
            rows.append(ResultRow(
                source=shift.source, target=shift.target, target_reference=shift.reference, label=shift.label,
                category=shift.category, method=method, layer=layer, depth=None if layer is None else layer / n_layers,
                n_layers=None if layer is None else n_layers, generalization_accuracy=gen, source_accuracy=0.8,
                zero_shot_accuracy=zero_shot, target_tuned_capability=ttc,
                differential_elicitation=differential_elicitation(gen, zero_shot, ttc), elicitation=elicitation(gen, ttc),
                target_tuned_method="mms", degenerate=degenerate if (i, method) == (0, "lat") else ""))
    sweep = [SweepRow(method, layer, f"{shifts[0].source}/train validation", VALIDATION, 0.5 + 0.4 * layer / n_layers,
                      None, None, None, None, None, None, 30, 10, 1.0, "train-70%", 0.01, layer / n_layers)
             for method in methods if method != ZERO_SHOT for layer in range(n_layers + 1)]
    write_csv(sweep, path / "sweeps" / f"{shifts[0].source}.csv")
    write_vouched_results(path, rows, **{"model": f"/models/{model}.gguf", "model_name": model, "seed": 0,
                                         "limit": limit, "prompt_format": "raw", "n_layers": n_layers, **info})
    return path


def test_three_runs_write_the_report_the_csv_and_the_plots(tmp_path):
    runs = [run_dir(tmp_path / "small", model="small", n_layers=30),
            run_dir(tmp_path / "medium", model="medium", n_layers=18, scale=0.5, offset=0.2),
            run_dir(tmp_path / "large", model="large", n_layers=24, scale=1.1)]
    comparison, out = write_comparison(runs, tmp_path / "cmp", n_bootstrap=200)
    names = sorted(p.name for p in out.iterdir())
    assert {"compare.md", "compare.csv", "means_by_model.png", "generalization_vs_depth.png", "validation_by_depth.png",
            "scatter_small_vs_medium.png", "scatter_small_vs_large.png", "scatter_medium_vs_large.png"} <= set(names)
    assert all((out / n).stat().st_size > 10_000 for n in names if n.endswith(".png"))
    text = (out / "compare.md").read_text()
    assert text.startswith("# GENIES comparison: small vs medium vs large")
    assert "Nothing was left out" in text and "they differ in the model only" in text
    for name in ("means_by_model.png", "generalization_vs_depth.png", "validation_by_depth.png",
                 "scatter_small_vs_medium.png"):
        assert f"]({name})" in text
    with (out / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    means = [r for r in rows if r["kind"] == "mean"]
    assert {(r["method"], r["run"]) for r in means} == {(m, run) for m in (ZERO_SHOT, "mms", "lat")
                                                         for run in ("small", "medium", "large")}
    pooled = next(r for r in rows if r["kind"] == "pair" and r["method"] == ZERO_SHOT and r["run_b"] == "medium"
                  and r["statistic"] == "pearson_r")
    assert float(pooled["estimate"]) == pytest.approx(1.0)  # zero-shot is the same in every run
    mms = next(r for r in rows if r["kind"] == "mean" and r["method"] == "mms" and r["run"] == "small"
               and r["statistic"] == "generalization_accuracy")
    assert float(mms["low"]) <= float(mms["estimate"]) <= float(mms["high"])
    assert len(comparison.pairs) == 3 and all(p.comparisons for p in comparison.pairs)


def test_a_pair_with_disjoint_shifts_is_reported_not_crashed(tmp_path):
    runs = [run_dir(tmp_path / "a", model="a", n_layers=30), run_dir(tmp_path / "b", model="b", n_layers=18),
            run_dir(tmp_path / "c", model="c", n_layers=12, shifts=SHIFTS[10:13], methods=(ZERO_SHOT, "mms", "ccs"))]
    result = CliRunner().invoke(genies, ["compare", *map(str, runs), "--out", str(tmp_path / "cmp"),
                                         "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert "A = a, B = c: not compared (no shared (shift, method) rows)" in result.output
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert "No shift is common to every run" in text
    assert "**Not compared: the two runs share no (shift, method) rows**" in text
    assert "method lat: only in a, b (not run by c)" in text and "method ccs: only in c (not run by a, b)" in text
    assert f"shift {SHIFTS[0].source} -> {SHIFTS[0].target}: only in a, b (not run by c)" in text
    assert (tmp_path / "cmp" / "scatter_a_vs_b.png").is_file() and not (tmp_path / "cmp" / "scatter_a_vs_c.png").exists()


def test_runs_that_differ_in_more_than_the_model_are_compared_with_a_warning(tmp_path):
    a = run_dir(tmp_path / "a", model="same", n_layers=30, data_fingerprints={"x/test": "1"}, compute_dtype="auto")
    b = run_dir(tmp_path / "b", model="same", n_layers=30, limit=40, prompt_format="chat",
                data_fingerprints={"x/test": "2"}, shifts=SHIFTS[:4], degenerate="constant scores (every pair tied)")
    result = CliRunner().invoke(genies, ["compare", str(a), str(b), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert "warning: --limit (examples per split) differs: same (a) 20, same (b) 40" in result.output
    assert "warning: --prompt-format differs" in result.output
    assert "warning: data files differ between runs (1: x/test)" in result.output
    text = (tmp_path / "compare-a-b" / "compare.md").read_text()  # the default --out: beside the first run
    assert "**Warning: these runs differ in more than the model**" in text
    assert "shift" in text and "only in same (a) (not run by same (b))" in text
    assert f"- same (b): lat on {SHIFTS[0].source} -> {SHIFTS[0].target} (constant scores (every pair tied))" in text
    assert "warning: degenerate fit: same (b): lat on" in result.output


def test_compare_refuses_an_out_that_is_a_run_or_another_directory(tmp_path):
    a, b = run_dir(tmp_path / "a", model="a", n_layers=30), run_dir(tmp_path / "b", model="b", n_layers=30)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    for out, message in ((a, "is one of the compared runs"), (tmp_path / "keep", "is not a `genies compare` directory")):
        result = CliRunner().invoke(genies, ["compare", str(a), str(b), "--out", str(out)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"
    one = CliRunner().invoke(genies, ["compare", str(a)])
    assert one.exit_code == 2 and "two or more run directories" in one.output


def test_a_degenerate_fit_is_one_line_with_every_target_it_was_evaluated_on():
    from types import SimpleNamespace as Row

    from genies.compare import degenerate_lines

    why = "constant scores"
    rows = [Row(method="lat", source="s", target=t, degenerate=why) for t in ("t1", "t2")]
    rows += [Row(method="mms", source="s", target="t1", degenerate=""), Row(method="lat", source="u", target="t3",
                                                                           degenerate=why)]
    assert degenerate_lines([Row(label="m", rows=rows)]) == [f"m: lat on s -> t1, t2 ({why})",
                                                             f"m: lat on u -> t3 ({why})"]
