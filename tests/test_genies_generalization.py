import math

import pytest

from genies.generalization import (UNTRAINED, ZERO_SHOT, Evaluation, MissingEvaluation, differential_elicitation,
                                   elicitation, rows_with_evaluations, target_tuned_capability)
from manifests import Shift


def result_rows(*args, **kwargs):
    return [row for row, _ in rows_with_evaluations(*args, **kwargs)]


def test_differential_elicitation_and_elicitation_hand_computed():
    # (0.8 - 0.6) / 0.9 and 0.8 / 0.9
    assert differential_elicitation(0.8, 0.6, 0.9) == pytest.approx(0.2 / 0.9)
    assert elicitation(0.8, 0.9) == pytest.approx(0.8 / 0.9)
    # worse than zero-shot: negative; TTC of 0.5 doubles the gap
    assert differential_elicitation(0.4, 0.7, 0.5) == pytest.approx(-0.6)
    assert elicitation(0.4, 0.5) == pytest.approx(0.8)


def test_method_equal_to_zero_shot_has_de_exactly_zero():
    for value in (0.1, 1 / 3, 0.7146666666666667, 0.999):
        assert differential_elicitation(value, value, 0.93) == 0.0


def test_target_tuned_capability_is_best_method_but_never_a_chance_baseline():
    assert target_tuned_capability({"zero-shot": 0.6, "mms": 0.9, "lora": 0.85}) == ("mms", 0.9)
    assert target_tuned_capability({"random": 0.99, "mms": 0.7}) == ("mms", 0.7)
    assert target_tuned_capability({"mms": math.nan, "lat": 0.6}) == ("lat", 0.6)
    with pytest.raises(ValueError):
        target_tuned_capability({"random": 0.5})


SHIFTS = [
    Shift("easy", "hard", "extreme", "difficulty"),
    Shift("easy", "trap", "probing", "unwanted_personas", target_reference="ref"),
]


def evaluations():
    zs = [Evaluation(ZERO_SHOT, UNTRAINED, d, a) for d, a in
          {"easy": 0.9, "hard": 0.6, "trap": 0.3, "ref": 0.7}.items()]
    mms = [Evaluation("mms", "easy", "easy", 0.95, layer=4, auroc=0.97, brier=0.05, rms_calibration_error=0.02),
           Evaluation("mms", "easy", "hard", 0.75, layer=4, auroc=0.8, brier=0.2, rms_calibration_error=0.1),
           Evaluation("mms", "easy", "trap", 0.2, layer=4),
           Evaluation("mms", "hard", "hard", 0.8, layer=4),
           Evaluation("mms", "ref", "ref", 0.88, layer=4)]
    rnd = [Evaluation("random", s, t, 0.99) for s, t in
           [("easy", "easy"), ("easy", "hard"), ("easy", "trap"), ("hard", "hard"), ("ref", "ref")]]
    return zs + mms + rnd


def test_result_rows_hand_computed():
    rows = {(r.target, r.method): r for r in result_rows(SHIFTS, evaluations())}
    assert len(rows) == 6
    hard = rows[("hard", "mms")]
    # TTC on "hard": mms 0.8 beats zero-shot 0.6; random's 0.99 is not a capability
    assert (hard.target_tuned_capability, hard.target_tuned_method) == (0.8, "mms")
    assert hard.generalization_accuracy == 0.75 and hard.source_accuracy == 0.95 and hard.zero_shot_accuracy == 0.6
    assert hard.differential_elicitation == pytest.approx((0.75 - 0.6) / 0.8)
    assert hard.elicitation == pytest.approx(0.75 / 0.8)
    assert (hard.layer, hard.auroc, hard.brier, hard.rms_calibration_error) == (4, 0.8, 0.2, 0.1)
    trap = rows[("trap", "mms")]
    # TTC measured on the reference, not the target; zero-shot from the target
    assert trap.target_reference == "ref" and trap.target_tuned_capability == 0.88
    assert trap.differential_elicitation == pytest.approx((0.2 - 0.3) / 0.88)
    for target in ("hard", "trap"):
        zero = rows[(target, ZERO_SHOT)]
        assert zero.differential_elicitation == 0.0
        assert zero.source_accuracy == 0.9 and zero.layer is None


def test_result_rows_with_mixed_training_set_and_missing_evaluation():
    mixed = [Evaluation("mms", "easy+2xhard", "hard", 0.85), Evaluation("mms", "easy+2xhard", "easy", 0.9)]
    rows = result_rows(SHIFTS[:1], evaluations() + mixed, methods=["mms"],
                       training_set=lambda s: f"{s.source}+2x{s.target}")
    assert [r.generalization_accuracy for r in rows] == [0.85]
    with pytest.raises(MissingEvaluation, match="lat trained on easy tested on hard"):
        result_rows(SHIFTS[:1], evaluations(), methods=["lat"])
