import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from common import UserError
from cli import genies
from genies.generalization import ZERO_SHOT, ResultRow, differential_elicitation, elicitation
from genies.report import write_report
from conftest import write_vouched_results
from genies.results_csv import load_run, read_results, write_results
from genies.summary import compare_runs, method_summaries, pearson, zero_shot_correlation
from genies.uncertainty import RunBootstrap
from manifests import load_manifest


def synthetic_rows(scale: float = 1.0, offset: float = 0.0, methods=(ZERO_SHOT, "mms", "lat")) -> list[ResultRow]:
    """GENIES shifts with made-up accuracies: zero-shot z_i, method m = z_i * scale + offset + k * 0.01."""
    rows = []
    for i, shift in enumerate(load_manifest("genies")):
        zero_shot = 0.3 + 0.04 * i
        ttc = 0.95
        for k, method in enumerate(methods):
            gen = zero_shot if method == ZERO_SHOT else min(1.0, zero_shot * scale + offset + 0.01 * k + 0.02 * (i % 3))
            rows.append(ResultRow(
                source=shift.source, target=shift.target, target_reference=shift.reference, label=shift.label,
                category=shift.category, method=method, layer=None if method == ZERO_SHOT else 12,
                generalization_accuracy=gen, source_accuracy=0.9, zero_shot_accuracy=zero_shot,
                target_tuned_capability=ttc, differential_elicitation=differential_elicitation(gen, zero_shot, ttc),
                elicitation=elicitation(gen, ttc), auroc=None if method == ZERO_SHOT else 0.8, brier=0.2,
                rms_calibration_error=0.1, target_tuned_method="lora"))
    return rows


@pytest.fixture
def run_dir(tmp_path):
    directory = tmp_path / "run"
    write_vouched_results(directory, synthetic_rows(), command="genies run --model tiny-random", model="tiny-random")
    return directory


def test_results_csv_round_trip(run_dir):
    assert load_run(run_dir) == synthetic_rows()


def test_summaries_and_group_means():
    rows = synthetic_rows()
    summary = {s.method: s for s in method_summaries(rows)}
    assert summary[ZERO_SHOT].differential_elicitation == 0.0
    assert summary["mms"].n_shifts == 15
    assert summary["mms"].generalization_accuracy == pytest.approx(
        np.mean([r.generalization_accuracy for r in rows if r.method == "mms"]))
    assert summary[ZERO_SHOT].auroc != summary[ZERO_SHOT].auroc  # all missing -> NaN
    extreme_rows = [r for r in rows if r.method == "lat" and r.label == "extreme"]
    extreme = RunBootstrap(rows, n_bootstrap=200).mean_interval("lat", "generalization_accuracy",
                                                                [r.shift for r in extreme_rows], name="extreme")
    assert extreme.estimate == pytest.approx(np.mean([r.generalization_accuracy for r in extreme_rows]))
    assert extreme.low <= extreme.estimate <= extreme.high


def test_pearson_hand_computed_and_degenerate():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = (-1, 0, 1) centred, y = (1, -1, 0) centred: sum xy = -1, |x|^2 = 2, |y|^2 = 2
    assert pearson([0, 1, 2], [2, 0, 1]) == pytest.approx(-0.5)
    assert np.isnan(pearson([1, 1, 1], [1, 2, 3])) and np.isnan(pearson([1], [1]))


def test_zero_shot_correlation_leaves_zero_shot_out():
    rows = synthetic_rows()
    corr = zero_shot_correlation(rows)
    points = [(r.zero_shot_accuracy, r.generalization_accuracy) for r in rows if r.method != ZERO_SHOT]
    assert corr.n == 30
    assert corr.pearson_r == pytest.approx(np.corrcoef(np.array(points).T)[0, 1])


def test_report_has_sections_plots_and_paper_figures(run_dir):
    write_vouched_results(run_dir, synthetic_rows(methods=(ZERO_SHOT, "mms-heads", "lat")))
    report = write_report(run_dir)
    text = report.path.read_text()
    for heading in ("Per-method means over the manifest", "Extreme vs probing", "Per category", "Per-shift results",
                    "Generalization vs zero-shot"):
        assert heading in text
    for png in ("generalization_vs_zero_shot.png", "methods.png"):
        assert (run_dir / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in text
    assert "`genies run --model tiny-random`" in text
    # the paper's llama-30b mms figure for GENIES shift 1 (0.964) and its GENIES mean (0.620) appear
    assert "0.964" in text and "mms, 15 | 0.620" in text
    assert "| mms-heads | mms | yes |" in text and "| lat | – | no: RepE's PCA" in text
    assert "without a comparable method in this run: few_shot, lora_fine_tuning" in text
    # the paper's own generalization-vs-zero-shot r on the GENIES shifts is about 0.74
    assert report.paper_correlation.pearson_r == pytest.approx(0.74, abs=0.01)
    assert report.correlation.pearson_r == pytest.approx(zero_shot_correlation(synthetic_rows()).pearson_r)
    shift_lines = [line for line in text.splitlines() if "| alpaca_short -> alpaca_long [ref alpaca_mmlu] |" in line]
    assert len(shift_lines) == 3


def test_cli_report_rebuilds(run_dir):
    result = CliRunner().invoke(genies, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "mms" in result.output and (run_dir / "report.md").is_file()


def test_cli_report_bad_input_is_one_line_exit_2(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(genies, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such run directory" in missing.output and "Traceback" not in missing.output
    (tmp_path / "results.csv").write_text("source,target\nA,B\n")
    bad = runner.invoke(genies, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and str(tmp_path / "results.csv") in bad.output and "vouches for it" in bad.output
    with pytest.raises(UserError, match="missing column"):
        read_results(tmp_path / "results.csv")
    rows = synthetic_rows()[:2]
    write_results(tmp_path / "results.csv", rows)
    lines = (tmp_path / "results.csv").read_text().splitlines()
    header, cells = lines[0].split(","), lines[2].split(",")
    cells[header.index("generalization_accuracy")] = "abc"
    (tmp_path / "results.csv").write_text("\n".join(lines[:2] + [",".join(cells)]) + "\n")
    with pytest.raises(UserError, match=r"results.csv: line 3: generalization_accuracy is not a number"):
        read_results(tmp_path / "results.csv")


def test_compare_runs_per_method_and_overall():
    a = synthetic_rows()
    b = synthetic_rows(scale=0.5, offset=0.2)  # every method affine in zero-shot -> per-method r = 1
    comparisons = {c.method: c for c in compare_runs(a, b)}
    assert comparisons["mms"].n == 15 and comparisons["mms"].pearson_r == pytest.approx(pearson(
        [r.generalization_accuracy for r in a if r.method == "mms"],
        [r.generalization_accuracy for r in b if r.method == "mms"]))
    assert comparisons[ZERO_SHOT].pearson_r == pytest.approx(1.0)
    assert comparisons["all"].n == 45
    flipped = synthetic_rows(scale=-1.0, offset=1.0, methods=(ZERO_SHOT, "mms"))
    assert {c.method for c in compare_runs(a, flipped)} == {ZERO_SHOT, "mms", "all"}


def test_cli_compare_prints_correlations(tmp_path):
    write_vouched_results(tmp_path / "a", synthetic_rows())
    write_vouched_results(tmp_path / "b", synthetic_rows(scale=0.5, offset=0.2))
    result = CliRunner().invoke(genies, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert lines["zero-shot"][1:5] == ["15", "1.0000", "1.0000", "1.0000"]  # r = 1 in every shift resample
    assert lines["all"][1] == "45"
    from genies.compare import compare_run_dirs

    found = {c.method: c for c in compare_run_dirs(tmp_path / "a", tmp_path / "b", n_bootstrap=500)}
    mms = found["mms"]  # b = 0.5 a + 0.2 (+ the same per-shift term): lower on every shift, so resolved
    assert mms.difference == pytest.approx(mms.mean_b - mms.mean_a) and mms.difference < 0
    assert mms.difference_low <= mms.difference <= mms.difference_high < 0 and mms.resolved
    same = {c.method: c for c in compare_run_dirs(tmp_path / "a", tmp_path / "a", n_bootstrap=500)}
    assert same["mms"].difference_low == same["mms"].difference_high == 0.0 and not same["mms"].resolved
    write_vouched_results(tmp_path / "c", [r for r in synthetic_rows() if r.method == "mms"][:1])
    write_vouched_results(tmp_path / "d", [r for r in synthetic_rows() if r.method == "lat"][:1])
    disjoint = CliRunner().invoke(genies, ["compare", str(tmp_path / "c"), str(tmp_path / "d")])
    assert disjoint.exit_code == 2 and "share no" in disjoint.output


def test_compute_dtype_line_names_one_dtype_and_flags_a_mix():
    from genies.generalization import Evaluation, RowEvaluations
    from genies.report import compute_dtype_line

    def row(dtypes):
        return RowEvaluations(*(Evaluation("mms", "a", tested, 0.5, compute_dtype=dtype)
                                for tested, dtype in zip(("b", "a", "c", "d"), dtypes)))

    same = {("a", "b", "mms"): row(["bfloat16"] * 4)}
    assert compute_dtype_line(same, "auto") == "- compute dtype: bfloat16 for all 4 evaluations (requested auto)"
    mixed = {("a", "b", "mms"): row(["bfloat16", "float32", "float32", None])}
    line = compute_dtype_line(mixed, "auto")
    assert line.startswith("- compute dtype: **mixed** (float32 for 2, bfloat16 for 1, not recorded for 1 of 4 ")
    assert "compare methods only within one dtype" in line
    assert compute_dtype_line(None, "float32").startswith("- compute dtype: not known")
    old = {("a", "b", "mms"): row([None] * 4)}
    assert compute_dtype_line(old, "auto").startswith("- compute dtype: not recorded (evaluations made before")


@pytest.mark.parametrize("example", sorted(p.parent.name for p in (Path(__file__).parent.parent / "docs").glob(
    "example-*/results.csv")))  # the run directories (docs/example-compare is a comparison, not a run)
def test_shipped_example_runs_are_the_files_their_run_wrote(example):
    """results.csv matches run.json's checksum, outcomes.json its seal, and every row has its evaluations."""
    from genies.evaluations import read_row_evaluations

    run_dir = Path(__file__).parent.parent / "docs" / example
    assert json.loads((run_dir / "run.json").read_text())["results_sha256"]
    rows = load_run(run_dir)
    evaluations = read_row_evaluations(run_dir)
    assert rows and evaluations is not None
    assert {(r.source, r.target, r.method) for r in rows} == set(evaluations)
    assert all(row.generalization.accuracy == pytest.approx(r.generalization_accuracy)
               for r in rows for row in [evaluations[(r.source, r.target, r.method)]])


def test_a_live_method_whose_loss_stayed_near_chance_is_flagged():
    from genies.report import barely_trained_lines

    learned, stuck = [0.693, 0.6, 0.45, 0.3, 0.2, 0.1], [0.693, 0.693, 0.692, 0.69, 0.689, 0.68]
    assert barely_trained_lines("prompt-tuning", [learned, learned]) == []
    (line,) = barely_trained_lines("lora", [learned, stuck, stuck])
    assert line.startswith("- **warning: lora barely trained on 2 of 3 training sets**: their final training loss is "
                           "0.680-0.680, within 0.03 of chance (ln 2 = 0.693)")


def test_the_correlation_with_zero_shot_is_named_per_method_and_pooled_apart(run_dir):
    """The paper's statistic (one method's r over shifts, beside the paper's own for the same method) and the pooled
    one, each labelled; the per-method r is the method's own, not the pooled one."""
    report = write_report(run_dir)
    text = report.path.read_text()
    assert "**Per method (the paper's statistic: one method's r over shifts).**" in text
    assert "**Pooled over methods (not the paper's statistic).**" in text
    rows = synthetic_rows()
    mms = [r for r in rows if r.method == "mms"]
    expected = pearson([r.zero_shot_accuracy for r in mms], [r.generalization_accuracy for r in mms])
    assert report.bootstrap.zero_shot_correlation("mms").estimate == pytest.approx(expected)
    section = text.split("**Per method (the paper's statistic")[1].split("**Pooled over methods")[0]
    line = next(line for line in section.splitlines() if line.startswith("| mms | 15 |"))
    # the residual-stream mms is not the paper's (head-based) mms: no paper value is put beside it
    assert f"{expected:.3f}" in line and line.endswith("| no counterpart |")
