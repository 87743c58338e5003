"""Bootstrap intervals and paired comparisons on synthetic stores whose truth is known by construction."""


import numpy as np
import pytest

from genies.evaluations import evaluation_from_metrics, read_row_evaluations, write_row_evaluations
from genies.generalization import ZERO_SHOT, rows_with_evaluations
from genies.report import write_report
from common.atomic import file_sha256
from conftest import write_vouched_results
from genies.results_csv import load_run, write_results
from genies.uncertainty import RunBootstrap, example_replicates, weighted_means, weighted_pearson
from manifests import Shift
from probes import make_probe
from synthetic import planted

N_SHIFTS = 6
SIGNAL_LAYER, NOISE_LAYER = 1, 2  # the planted direction lives on layer 1 only
DIRECTION = np.random.default_rng(99).standard_normal(24)


def source_of(seed: int, split: str, dataset: str):
    return planted(n_examples=60, seed=seed, split=split, dataset=dataset, signal_layers=(SIGNAL_LAYER,),
                   direction=DIRECTION, views=("plain",)).source()


def synthetic_shifts() -> tuple[list[Shift], list]:
    """Per shift: `signal` (mms on the planted layer), `noise` and `noise-2` (mms on layers holding only
    noise), and zero-shot, each trained on the source's train split and tested on the test splits."""
    layers = {"signal": SIGNAL_LAYER, "noise": NOISE_LAYER, "noise-2": 3}
    shifts, evaluations = [], []
    for i in range(N_SHIFTS):
        source, target = f"s{i}", f"t{i}"
        shifts.append(Shift(source, target, "extreme" if i % 2 else "probing", "synthetic"))
        tests = {name: source_of(100 + 2 * i + k, "test", name) for k, name in enumerate((source, target))}
        trains = {name: source_of(200 + 2 * i + k, "train", name) for k, name in enumerate((source, target))}
        for tested_on, test in tests.items():
            for method, layer in layers.items():
                for trained_on in {source, tested_on}:
                    probe = make_probe("mms", layer).fit(trains[trained_on])
                    metrics, outcomes = probe.score_with_outcomes(test, n_bootstrap=0)
                    evaluations.append(evaluation_from_metrics(method, trained_on, tested_on, metrics, layer, outcomes))
            zero_shot = make_probe(ZERO_SHOT).fit(test)
            metrics, outcomes = zero_shot.score_with_outcomes(test, n_bootstrap=0)
            evaluations.append(evaluation_from_metrics(ZERO_SHOT, "", tested_on, metrics, None, outcomes))
    return shifts, evaluations


@pytest.fixture(scope="module")
def found():
    shifts, evaluations = synthetic_shifts()
    return rows_with_evaluations(shifts, evaluations, [ZERO_SHOT, "signal", "noise", "noise-2"])


@pytest.fixture(scope="module")
def bootstrap(found):
    return RunBootstrap([row for row, _ in found], {row.key: e for row, e in found}, n_bootstrap=1000, seed=0)


def test_a_planted_direction_beats_noise_and_the_paired_interval_excludes_zero(bootstrap):
    difference = bootstrap.difference("signal", "noise")
    assert difference.n_shifts == N_SHIFTS and difference.a_wins == N_SHIFTS
    assert difference.difference.low > 0.1 and difference.resolved
    signal = bootstrap.mean_interval("signal", "generalization_accuracy")
    assert signal.low > 0.5  # and it differs from chance


def test_two_noise_methods_are_not_told_apart(bootstrap):
    difference = bootstrap.difference("noise", "noise-2")
    assert difference.difference.low < 0.0 < difference.difference.high and not difference.resolved
    noise = bootstrap.mean_interval("noise", "generalization_accuracy")
    assert noise.low < 0.5 < noise.high


def test_the_difference_is_paired(bootstrap):
    """Shared resamples: the interval of a difference is narrower than the marginal intervals added up."""
    a = bootstrap.mean_interval("noise", "generalization_accuracy")
    b = bootstrap.mean_interval("noise-2", "generalization_accuracy")
    paired = bootstrap.difference("noise", "noise-2").difference
    assert paired.estimate == pytest.approx(a.estimate - b.estimate)
    assert paired.high - paired.low < (a.high - a.low) + (b.high - b.low)


def test_per_shift_interval_covers_the_accuracy_and_zero_shot_has_de_zero(found, bootstrap):
    for row, _ in found:
        generalization = bootstrap.row_interval(row, "generalization_accuracy")
        assert generalization.low <= row.generalization_accuracy <= generalization.high
        assert 0.0 < generalization.high - generalization.low < 0.5
        if row.method == ZERO_SHOT:  # generalization and zero-shot move together: DE is 0 in every replicate
            de = bootstrap.row_interval(row, "differential_elicitation")
            assert de.low == de.high == 0.0


def test_seeded_and_independent_of_other_methods(found):
    rows, evaluations = [row for row, _ in found], {row.key: e for row, e in found}
    first = RunBootstrap(rows, evaluations, n_bootstrap=300, seed=3)
    again = RunBootstrap(rows, evaluations, n_bootstrap=300, seed=3)
    other_seed = RunBootstrap(rows, evaluations, n_bootstrap=300, seed=4)
    fewer = RunBootstrap([r for r in rows if r.method != "noise-2"], evaluations, n_bootstrap=300, seed=3)
    signal = [b.mean_interval("signal", "generalization_accuracy") for b in (first, again, other_seed, fewer)]
    assert signal[0] == signal[1] == signal[3] and signal[0] != signal[2]


def test_example_replicates_resample_examples_not_pairs():
    """An example with 3 pairs moves 3 pairs at once: every replicate is a ratio of whole examples."""
    from genies.generalization import Evaluation
    from common.metrics import ExampleOutcomes

    outcomes = ExampleOutcomes(np.array([0, 1]), np.array([3, 1]), np.array([3.0, 0.0]))
    replicates = example_replicates([Evaluation("m", "a", "d", 0.75, outcomes=outcomes)], n_bootstrap=500)["m|a|d"]
    assert set(np.round(replicates, 6)) == {0.0, 0.75, 1.0}  # (0+0)/2, (3+0)/4, (3+3)/6


def test_weighted_helpers_hand_computed():
    values = np.array([[0.2, np.nan, 0.8]])
    assert weighted_means(values, np.array([[1.0, 5.0, 3.0]]))[0] == pytest.approx((0.2 + 2.4) / 4)
    x, y = np.array([[0.0, 1.0, 2.0]]), np.array([[2.0, 0.0, 1.0]])
    assert weighted_pearson(x, y, np.ones((1, 3)))[0] == pytest.approx(-0.5)
    # weight 2 on a point is the point listed twice
    assert weighted_pearson(x, y, np.array([[2.0, 1.0, 1.0]]))[0] == pytest.approx(
        np.corrcoef([0, 0, 1, 2], [2, 2, 0, 1])[0, 1])


def test_report_marks_the_resolved_difference_and_is_byte_identical_when_rebuilt(found, tmp_path):
    rows = [row for row, _ in found]
    boot = RunBootstrap(rows, {row.key: e for row, e in found}, seed=0)
    results = write_vouched_results(tmp_path, [boot.with_intervals(row) for row in rows], seed=0)
    write_row_evaluations(tmp_path / "outcomes.json", found, file_sha256(results))
    assert set(read_row_evaluations(tmp_path)) == {row.key for row in rows}
    loaded = load_run(tmp_path)
    assert loaded[1].generalization_accuracy_low == pytest.approx(boot.row_interval(rows[1], "generalization_accuracy").low)

    report = write_report(tmp_path)
    text = report.path.read_text()
    line = next(line for line in text.splitlines() if line.startswith("| signal | noise |"))
    assert "**yes**" in line.split("|")[5]
    line = next(line for line in text.splitlines() if line.startswith("| noise | noise-2 |"))
    assert line.split("|")[5].strip() == "no"
    assert "signal > noise" in text and "uncertainty: [low, high] = 95% percentile bootstrap" in text
    first = {name: (tmp_path / name).read_bytes() for name in ("report.md", "methods.png", "generalization_vs_zero_shot.png")}
    write_report(tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in first} == first


def test_report_without_outcomes_says_its_intervals_resample_shifts_only(found, tmp_path):
    write_vouched_results(tmp_path, [row for row, _ in found])
    report = write_report(tmp_path)
    assert report.unchecked == [f"{tmp_path}: outcomes.json is missing: per-example outcomes are unknown, so intervals "
                                "resample shifts only"]
    text = report.path.read_text()
    assert "only 0 of 24 rows kept per-example outcomes" in text
    mean_line = next(line for line in text.splitlines() if line.startswith("| signal | 6 |"))
    assert "[" in mean_line  # means still carry a (shift-only) interval


def test_compare_two_runs_on_the_same_examples_shares_their_resamples(found, tmp_path):
    from genies.compare import compare_run_dirs

    for name in ("a", "b"):
        results = write_results(tmp_path / name / "results.csv", [row for row, _ in found])
        write_row_evaluations(tmp_path / name / "outcomes.json", found, file_sha256(results))  # no run.json
    by_method = {c.method: c for c in compare_run_dirs(tmp_path / "a", tmp_path / "b", n_bootstrap=300)}
    assert set(by_method) == {ZERO_SHOT, "signal", "noise", "noise-2", "all"}
    for comparison in by_method.values():  # same outcomes, same resamples: no difference in any replicate
        assert comparison.difference_low == comparison.difference_high == 0.0
        assert comparison.r_low == pytest.approx(1.0)
