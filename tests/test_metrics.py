"""common.metrics on hand-computed cases and against scikit-learn."""

import math
import random

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import brier_score_loss, roc_auc_score

from common.metrics import (
    Metrics,
    binned_rms_calibration_error,
    compute_metrics,
    fit_temperature,
    pair_indices,
    pair_margins,
    reference_rms_calibration_error,
)


def test_pair_indices_all_pairs_in_sequence_order():
    example = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    is_best = np.array([0, 1, 0, 1, 0, 0, 0, 0, 1], dtype=bool)
    best, other = pair_indices(example, is_best)
    assert best.tolist() == [1, 1, 3, 8, 8, 8]
    assert other.tolist() == [0, 2, 4, 5, 6, 7]


def test_pair_indices_accepts_scores_as_labels_and_unsorted_examples():
    example = np.array([5, 3, 5, 3])
    score = np.array([0.0, 1.0, 1.0, 0.0])
    best, other = pair_indices(example, score)
    assert list(zip(best.tolist(), other.tolist())) == [(2, 0), (1, 3)]


@pytest.mark.parametrize("is_best, message", [([1, 1, 0], "2 best"), ([0, 0, 1], "no best")])
def test_pair_indices_rejects_bad_labels(is_best, message):
    with pytest.raises(ValueError, match=message):
        pair_indices(np.array([0, 0, 1]), np.array(is_best, dtype=bool))


def test_pair_margins():
    scores = np.array([0.5, 2.0, -1.0, 3.0, 3.0])
    margins = pair_margins(scores, np.array([0, 0, 0, 1, 1]), np.array([0, 1, 0, 1, 0]))
    assert margins.tolist() == [1.5, 3.0, 0.0]


def test_perfect_scores():
    result = compute_metrics(np.array([1.0, 2.0, 0.5, 3.0]), temperature=0.01, n_bootstrap=0)
    assert result.accuracy == 1.0
    assert result.auroc == 1.0
    assert result.brier == pytest.approx(0.0, abs=1e-12)
    assert result.rms_calibration_error == pytest.approx(0.0, abs=1e-12)
    assert result.n_pairs == 4 and result.n_examples is None


def test_inverted_scores():
    result = compute_metrics(np.array([-1.0, -2.0, -0.5, -3.0]), temperature=0.01, n_bootstrap=0)
    assert result.accuracy == 0.0
    assert result.auroc == 0.0
    assert result.brier == pytest.approx(1.0, abs=1e-12)
    assert result.rms_calibration_error == pytest.approx(1.0, abs=1e-12)


def test_ties_count_half_and_give_chance_probabilities():
    result = compute_metrics(np.array([0.0, 0.0, 1.0, -1.0]), n_bootstrap=0)
    assert result.accuracy == pytest.approx((0.5 + 0.5 + 1 + 0) / 4)
    all_ties = compute_metrics(np.zeros(10), n_bootstrap=0)
    assert all_ties.accuracy == 0.5
    assert all_ties.auroc == 0.5
    assert all_ties.brier == pytest.approx(0.25)
    assert all_ties.rms_calibration_error == pytest.approx(0.0)  # P = 0.5 and half the labels are 1


def test_hand_computed_values():
    # margins 2, -1, 0 with T = 1: P = sigmoid(2), sigmoid(-1), 0.5
    margins = np.array([2.0, -1.0, 0.0])
    p = expit(margins)
    result = compute_metrics(margins, n_bootstrap=0)
    assert result.accuracy == pytest.approx(1.5 / 3)
    assert result.brier == pytest.approx(np.mean((1 - p) ** 2))
    # Balanced set: probs {p, 1-p}, labels {1, 0}. Positives p = .881, .269, .5; negatives .119, .731, .5.
    # Wins of positives over negatives: .881 beats 3, .269 beats 1, .5 beats 1 and ties 1 -> 5.5 of 9.
    assert result.auroc == pytest.approx(5.5 / 9)


def test_temperature_scales_probabilities_not_accuracy():
    margins = np.array([1.0, 2.0, -0.5])
    hot, cold = compute_metrics(margins, temperature=10.0, n_bootstrap=0), compute_metrics(margins, temperature=0.1, n_bootstrap=0)
    assert hot.accuracy == cold.accuracy
    assert hot.brier == pytest.approx(np.mean((1 - expit(margins / 10)) ** 2))
    assert cold.brier == pytest.approx(np.mean((1 - expit(margins / 0.1)) ** 2))
    with pytest.raises(ValueError, match="temperature"):
        compute_metrics(margins, temperature=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_brier_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    margins = np.round(rng.normal(0.5, 1.5, 300), 1)  # rounding creates ties
    result = compute_metrics(margins, temperature=0.7, n_bootstrap=0)
    p = expit(margins / 0.7)
    probs, labels = np.concatenate([p, 1 - p]), np.concatenate([np.ones(300), np.zeros(300)])
    assert result.auroc == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
    assert result.brier == pytest.approx(brier_score_loss(labels, probs), abs=1e-12)


def _simulate_calibrated_margins(rng, n, temperature):
    """|margin| anywhere; best wins with probability sigmoid(|margin| / T): calibrated at T."""
    size = rng.exponential(2.0, n)
    wins = rng.random(n) < expit(size / temperature)
    return np.where(wins, size, -size)


def test_calibration_error_small_when_calibrated_large_when_not():
    rng = np.random.default_rng(0)
    margins = _simulate_calibrated_margins(rng, 20000, temperature=1.5)
    calibrated = compute_metrics(margins, temperature=1.5, n_bootstrap=0)
    overconfident = compute_metrics(margins, temperature=0.1, n_bootstrap=0)
    underconfident = compute_metrics(margins, temperature=50.0, n_bootstrap=0)
    assert calibrated.rms_calibration_error < 0.02
    assert overconfident.rms_calibration_error > 0.1
    assert underconfident.rms_calibration_error > 0.1
    assert calibrated.brier < overconfident.brier


def test_binned_calibration_by_hand():
    # Two bins of 4 equal-width bins used: [0.25, 0.5) holds (0.3, y=1), (0.3, y=0); [0.75, 1] holds (0.9, 1), (1.0, 1).
    probs = np.array([0.3, 0.3, 0.9, 1.0])
    labels = np.array([1, 0, 1, 1])
    gap_low = 0.5 - 0.3
    gap_high = 1.0 - 0.95
    expected = math.sqrt(0.5 * gap_low**2 + 0.5 * gap_high**2)
    assert binned_rms_calibration_error(probs, labels, n_bins=4) == pytest.approx(expected)


def test_reference_formula_reproduced_step_by_step():
    rng = np.random.default_rng(3)
    p_best = rng.uniform(0.2, 1.0, 400)
    p_best[:5] = 1.0  # q = 1.0 is dropped by the reference's np.digitize
    # Independent transcription of genies-reference.md §2.4.
    random.seed(42)
    y = np.array([random.choice([0, 1]) for _ in range(len(p_best))])
    q = np.array([(1 - p) if label == 0 else p for label, p in zip(y, p_best)])
    bins = np.digitize(q, np.linspace(0, 1, 6))
    kept = [np.mean((np.mean(y) - np.mean(q[bins == b])) ** 2) for b in range(1, 6) if (bins == b).sum() >= 20]
    expected = np.sqrt(np.mean(kept))
    assert reference_rms_calibration_error(p_best) == pytest.approx(expected)
    margins = np.log(p_best / np.clip(1 - p_best, 1e-300, None))
    assert compute_metrics(margins, calibration="reference", n_bootstrap=0).rms_calibration_error == pytest.approx(expected, rel=1e-6)
    # The compatibility formula disagrees with the binned one on hard 0/1 predictions (§2.4: ~0.5).
    hard = compute_metrics(np.full(200, 50.0), calibration="reference", n_bootstrap=0)
    assert abs(hard.rms_calibration_error - 0.5) < 0.1
    assert compute_metrics(np.full(200, 50.0), n_bootstrap=0).rms_calibration_error < 1e-9


def test_reference_formula_nan_with_small_bins():
    assert math.isnan(reference_rms_calibration_error(np.full(10, 0.7)))


def test_bootstrap_ci_is_seeded_and_brackets_accuracy():
    rng = np.random.default_rng(1)
    margins = rng.normal(0.3, 1.0, 500)
    a = compute_metrics(margins, seed=7)
    b = compute_metrics(margins, seed=7)
    c = compute_metrics(margins, seed=8)
    assert (a.accuracy_ci_low, a.accuracy_ci_high) == (b.accuracy_ci_low, b.accuracy_ci_high)
    assert (a.accuracy_ci_low, a.accuracy_ci_high) != (c.accuracy_ci_low, c.accuracy_ci_high)
    assert a.accuracy_ci_low < a.accuracy < a.accuracy_ci_high
    # Binomial standard error sqrt(p(1-p)/n) ~ 0.022: the 95% interval is about 4 standard errors wide.
    se = math.sqrt(a.accuracy * (1 - a.accuracy) / 500)
    assert 3 * se < a.accuracy_ci_high - a.accuracy_ci_low < 5 * se


def test_bootstrap_over_examples_is_wider_for_correlated_pairs():
    # 50 examples with 10 pairs each; all pairs of an example are right or wrong together.
    rng = np.random.default_rng(2)
    per_example = rng.random(50) < 0.7
    margins = np.repeat(np.where(per_example, 1.0, -1.0), 10)
    pair_example = np.repeat(np.arange(50), 10)
    by_example = compute_metrics(margins, pair_example=pair_example)
    by_pair = compute_metrics(margins)
    assert by_example.n_examples == 50
    width = lambda m: m.accuracy_ci_high - m.accuracy_ci_low  # noqa: E731
    assert width(by_example) > 2 * width(by_pair)


def test_metrics_as_dict_and_input_checks():
    result = compute_metrics(np.array([1.0, -1.0]), n_bootstrap=10)
    assert isinstance(result, Metrics)
    assert set(result.as_dict()) == {"accuracy", "accuracy_ci_low", "accuracy_ci_high", "auroc", "brier",
                                     "rms_calibration_error", "n_pairs", "n_examples", "accuracy_se"}
    with pytest.raises(ValueError, match="no pairs"):
        compute_metrics(np.array([]))
    with pytest.raises(ValueError, match="non-finite"):
        compute_metrics(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="calibration"):
        compute_metrics(np.array([1.0]), calibration="ece")


@pytest.mark.parametrize("true_temperature", [0.3, 1.0, 4.0])
def test_fit_temperature_recovers_calibrated_temperature(true_temperature):
    rng = np.random.default_rng(0)
    margins = _simulate_calibrated_margins(rng, 20000, true_temperature)
    assert fit_temperature(margins) == pytest.approx(true_temperature, rel=0.1)
    # Rescaling the scores rescales the temperature.
    assert fit_temperature(10 * margins) == pytest.approx(10 * fit_temperature(margins), rel=1e-6)


def test_fit_temperature_edge_cases():
    separable = np.array([1.0, 2.0, 3.0])
    temperature = fit_temperature(separable)
    assert 0 < temperature < 3  # finite despite perfect separation, and confident
    assert fit_temperature(np.zeros(5)) == 1.0
    anti = fit_temperature(np.array([-1.0, -2.0, 0.5]))
    assert anti > 1e3  # no signal in the right direction: P(best) ~ 0.5 everywhere
    assert compute_metrics(np.array([-1.0, -2.0, 0.5]), temperature=anti, n_bootstrap=0).brier == pytest.approx(0.25, abs=1e-6)


def test_example_outcomes_and_clustered_standard_error():
    from common.metrics import ExampleOutcomes, example_outcomes, pair_correctness, ratio_standard_error

    margins = np.array([1.0, -1.0, 0.0, 2.0, 3.0])
    outcomes = example_outcomes(margins, np.array([7, 7, 3, 3, 9]))
    assert outcomes.example.tolist() == [3, 7, 9] and outcomes.pairs.tolist() == [2, 2, 1]
    assert outcomes.correct.tolist() == [1.5, 1.0, 1.0]  # the tie counts 0.5
    assert outcomes.accuracy == pytest.approx(pair_correctness(margins).mean())
    assert ExampleOutcomes.from_dict(outcomes.as_dict()).correct.tolist() == outcomes.correct.tolist()
    # one pair per example: the usual binomial standard error sqrt(p(1-p)/(n-1))
    correct = np.array([1.0, 0.0, 1.0, 1.0])
    assert ratio_standard_error(correct, np.ones(4)) == pytest.approx(np.sqrt(0.75 * 0.25 / 3))
    metrics = compute_metrics(np.array([1.0, -1.0, 1.0, 1.0]), n_bootstrap=0)
    assert metrics.accuracy_se == pytest.approx(np.sqrt(0.75 * 0.25 / 3))
