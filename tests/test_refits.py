"""Refits: training examples drawn with replacement, and the bootstrap that carries the fit's own variability."""

import numpy as np
import pytest

from common.metrics import ExampleOutcomes, Metrics
from genies.evaluations import evaluation_from_metrics, evaluation_from_record, evaluation_record
from genies.generalization import DIRECTIONS, REFITS, Evaluation, interval_covers
from genies.refits import refit_paths, refit_seed
from genies.uncertainty import example_replicates
from probes.labels import Labels, split_by_example
from probes.resample import resample_rows

N_EXAMPLES = 200


def labels_of(n_examples: int, responses: int = 3) -> Labels:
    example = np.repeat(np.arange(10, 10 + n_examples), responses)
    is_best = np.tile(np.arange(responses) == 0, n_examples)
    return Labels(example, is_best)


def test_a_resample_draws_whole_examples_and_copies_never_pair_with_each_other():
    labels = labels_of(50)
    rows, drawn = resample_rows(labels, np.random.default_rng(3))
    assert len(np.unique(drawn.example)) == 50 and len(rows) == len(labels)
    assert np.array_equal(drawn.origin, labels.example[rows])
    for new_id in np.unique(drawn.example):  # each draw is one whole example: its responses, best first
        where = drawn.example == new_id
        assert len(np.unique(drawn.origin[where])) == 1 and drawn.is_best[where].tolist() == [True, False, False]
    best, other = drawn.pairs
    assert np.all(drawn.example[best] == drawn.example[other]) and len(best) == 2 * 50
    assert len(np.unique(drawn.origin)) < 50  # drawn with replacement: some examples twice, some not at all
    again, _ = resample_rows(labels, np.random.default_rng(3))
    assert np.array_equal(rows, again)


def test_a_validation_split_keeps_the_copies_of_one_example_on_one_side():
    _, drawn = resample_rows(labels_of(60), np.random.default_rng(0))
    fit_rows, val_rows = split_by_example(drawn, 0.3, seed=1)
    assert not set(drawn.origin[fit_rows]) & set(drawn.origin[val_rows])
    assert set(drawn.example[fit_rows]).isdisjoint(drawn.example[val_rows])


def test_refit_seeds_and_paths_are_distinct_and_stable(tmp_path):
    seeds = [refit_seed(0, r) for r in range(1, 9)]
    assert len(set(seeds)) == 8 and 0 not in seeds and seeds == [refit_seed(0, r) for r in range(1, 9)]
    assert refit_seed(1, 1) != refit_seed(0, 1)
    assert refit_paths(tmp_path / "fits" / "mms" / "easy", 2) == [tmp_path / "fits" / "mms" / "easy.refits" / "1",
                                                                 tmp_path / "fits" / "mms" / "easy.refits" / "2"]


def outcomes_of(correct: np.ndarray) -> ExampleOutcomes:
    return ExampleOutcomes(np.arange(len(correct)), np.ones(len(correct), dtype=np.int64), correct.astype(float))


def evaluation(correct, refits=(), kind=REFITS, method="logreg", tested_on="t", trained_on="s") -> Evaluation:
    main = outcomes_of(np.asarray(correct))
    refit_outcomes = tuple(outcomes_of(np.asarray(r)) for r in refits) or None
    metrics = Metrics(main.accuracy, np.nan, np.nan, np.nan, np.nan, np.nan, int(main.pairs.sum()), len(main.example))
    return evaluation_from_metrics(method, trained_on, tested_on, metrics, 1, main, refit_outcomes=refit_outcomes,
                                   refits=kind if refits else None)


def width(replicates: np.ndarray) -> float:
    low, high = np.percentile(replicates, [2.5, 97.5])
    return high - low


def test_identical_refits_leave_the_interval_as_the_test_examples_alone_make_it():
    correct = np.random.default_rng(0).random(N_EXAMPLES) < 0.7
    alone = example_replicates([evaluation(correct)], 500)["logreg|s|t"]
    refitted = example_replicates([evaluation(correct, [correct] * 4)], 500)["logreg|s|t"]
    assert np.allclose(alone, refitted)


def test_refits_that_move_widen_the_interval_about_the_fit_not_about_the_refits():
    rng = np.random.default_rng(1)
    correct = rng.random(N_EXAMPLES) < 0.7
    refits = [rng.random(N_EXAMPLES) < p for p in (0.45, 0.5, 0.55, 0.6, 0.65, 0.7)]  # worse than the fit
    alone = example_replicates([evaluation(correct)], 2000)["logreg|s|t"]
    refitted = example_replicates([evaluation(correct, refits)], 2000)["logreg|s|t"]
    assert width(refitted) > 1.5 * width(alone)
    assert abs(np.median(refitted) - correct.mean()) < 0.02  # centred on the fit: refits on fewer examples do worse
    assert refitted.min() >= 0.0 and refitted.max() <= 1.0


def test_the_evaluations_of_one_fit_draw_the_same_refit_in_each_replicate():
    """Refit j is right on every example exactly when j is even, on both test splits: the target's and the
    source's replicates then agree draw by draw (and two methods draw independently)."""
    refits = [np.full(N_EXAMPLES, j % 2 == 0) for j in range(6)]
    main = np.full(N_EXAMPLES, True)
    found = example_replicates([evaluation(main, refits, tested_on="t"), evaluation(main, refits, tested_on="s"),
                                evaluation(main, refits, tested_on="t", method="mms")], 400)
    assert np.array_equal(found["logreg|s|t"], found["logreg|s|s"])
    assert not np.array_equal(found["logreg|s|t"], found["mms|s|t"])
    assert len(np.unique(found["logreg|s|t"])) == 2


def test_a_chance_baseline_is_the_mean_of_its_directions_and_each_replicate_draws_one():
    rng = np.random.default_rng(2)
    directions = [rng.random(N_EXAMPLES) < p for p in (0.2, 0.35, 0.5, 0.65, 0.8)]
    random = evaluation(directions[0], directions[1:], kind=DIRECTIONS, method="random")
    assert random.accuracy == pytest.approx(np.mean([d.mean() for d in directions]))
    replicates = example_replicates([random], 2000)["random|s|t"]
    low, high = np.percentile(replicates, [2.5, 97.5])
    assert low < 0.25 and high > 0.75  # the spread of single directions, not of their mean
    assert interval_covers(random) == "test examples + 5 random directions"


def test_refit_outcomes_survive_the_evaluation_record():
    found = evaluation([True, False, True], [[True, True, False], [False, False, True]])
    again = evaluation_from_record(evaluation_record(found))
    assert again.refit_outcomes == found.refit_outcomes and again.refits == REFITS and again.accuracy == found.accuracy
    assert interval_covers(found) == "test examples + 2 refits on resampled training data"
    assert interval_covers(evaluation([True, False])) == "test examples only (the fit is not repeated)"
    assert interval_covers(evaluation([True, False], method="zero-shot")) == "test examples"
