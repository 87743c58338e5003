"""Generalization metrics per shift and method (DESIGN §8, reference §2.5): pure functions.

For a shift (source S, target T, reference R = target_reference or T) and a method M:

- generalization accuracy: M trained on S, tested on T's test split;
- source accuracy: the same fit tested on S's test split;
- zero-shot accuracy: the untrained zero-shot baseline on T's test split;
- target-tuned capability (TTC): the best method trained on R's train split and tested on R's
  test split (the reference's shipped tables take this best-of-methods maximum too);
- differential elicitation DE = (generalization - zero-shot) / TTC; elicitation El =
  generalization / TTC.

Evaluations are the runner's raw material: one per (method, training set, tested-on
distribution). Methods that train on nothing (zero-shot) use ``UNTRAINED`` as their training set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import registry
from manifests import Shift
from common.metrics import ExampleOutcomes

ZERO_SHOT = "zero-shot"
UNTRAINED = ""
REFITS = "refits"  # Evaluation.refits: refits on resampled training data (genies/refits.py); the point is the fit's
DIRECTIONS = "directions"  # Evaluation.refits: a chance baseline's directions; the point is their mean


@dataclass(frozen=True)
class Evaluation:
    """One fitted method tested on one distribution's test split."""

    method: str
    trained_on: str  # a training-set name (usually the source distribution) or UNTRAINED
    tested_on: str
    accuracy: float
    layer: int | None = None
    auroc: float | None = None
    brier: float | None = None
    rms_calibration_error: float | None = None
    outcomes: ExampleOutcomes | None = None  # per example: what a bootstrap resamples
    validation_pairs: int | None = None  # pairs of the validation split that chose the layer
    compute_dtype: str | None = None  # what the model computed in: the scored stores', or the live model's
    degenerate: str | None = None  # why the fit or its scores are degenerate (never an ordinary number), or None
    refit_outcomes: tuple[ExampleOutcomes, ...] | None = None  # the outcomes of each refit (genies/refits.py)
    refits: str | None = None  # what the refits are: "refits" (of the fit on resampled data) or "directions"

    @property
    def key(self) -> str:
        return f"{self.method}|{self.trained_on}|{self.tested_on}"


# Accuracies (and ratios of accuracies) that carry a bootstrap interval: `<name>_low` / `<name>_high`.
INTERVAL_METRICS = ("generalization_accuracy", "source_accuracy", "zero_shot_accuracy", "target_tuned_capability",
                    "differential_elicitation", "elicitation")


@dataclass(frozen=True)
class ResultRow:
    """One row of results.csv: one shift x one method."""

    source: str
    target: str
    target_reference: str
    label: str
    category: str
    method: str
    layer: int | None
    generalization_accuracy: float
    source_accuracy: float
    zero_shot_accuracy: float
    target_tuned_capability: float
    differential_elicitation: float
    elicitation: float
    auroc: float | None = None
    brier: float | None = None
    rms_calibration_error: float | None = None
    target_tuned_method: str = ""
    validation_pairs: int | None = None
    depth: float | None = None  # layer / n_layers: 0 = embeddings, 1 = the last block's output
    n_layers: int | None = None  # the model's blocks (layers 0..n_layers)
    degenerate: str = ""  # why this row's fit or scores are degenerate ("" when they are not)
    target_tuned_excluded: str = ""  # methods on the reference left out of the TTC, and why
    interval_covers: str = ""  # what the row's intervals resample (interval_covers())
    generalization_accuracy_low: float | None = None
    generalization_accuracy_high: float | None = None
    source_accuracy_low: float | None = None
    source_accuracy_high: float | None = None
    zero_shot_accuracy_low: float | None = None
    zero_shot_accuracy_high: float | None = None
    target_tuned_capability_low: float | None = None
    target_tuned_capability_high: float | None = None
    differential_elicitation_low: float | None = None
    differential_elicitation_high: float | None = None
    elicitation_low: float | None = None
    elicitation_high: float | None = None

    @property
    def shift_name(self) -> str:
        return f"{self.source}->{self.target}"

    @property
    def shift(self) -> tuple[str, str]:
        return self.source, self.target

    @property
    def key(self) -> tuple[str, str, str]:
        return self.source, self.target, self.method

    def interval(self, metric: str) -> tuple[float | None, float | None]:
        return getattr(self, f"{metric}_low"), getattr(self, f"{metric}_high")


@dataclass(frozen=True)
class RowEvaluations:
    """The evaluations behind one result row (their per-example outcomes feed the bootstrap)."""

    generalization: Evaluation
    source: Evaluation
    zero_shot: Evaluation
    target_tuned: Evaluation


def interval_covers(evaluation: Evaluation) -> str:
    """What the intervals of a row whose generalization is ``evaluation`` resample, beside the shifts of means."""
    refits = len(evaluation.refit_outcomes or ())
    if evaluation.refits == DIRECTIONS:
        return f"test examples + {refits + 1} random directions"
    if refits:
        return f"test examples + {refits} refits on resampled training data"
    spec = registry.all_methods().get(evaluation.method)
    if spec is not None and spec.kind in (registry.Kind.PROBE, registry.Kind.LIVE_TRAINED):
        return "test examples only (the fit is not repeated)"
    return "test examples"


def differential_elicitation(generalization: float, zero_shot: float, target_tuned_capability: float) -> float:
    """(generalization - zero-shot) / TTC; exactly 0.0 when the method equals zero-shot."""
    return (generalization - zero_shot) / target_tuned_capability


def elicitation(generalization: float, target_tuned_capability: float) -> float:
    return generalization / target_tuned_capability


def relative_depth(layer: int | None, n_layers: int | None) -> float | None:
    """layer / n_layers (0 = embeddings, 1 = the last block's output); None where either is unknown."""
    if layer is None or not n_layers:
        return None
    return layer / n_layers


def target_tuned_capability(in_distribution: Mapping[str, float],
                            ineligible: Mapping[str, str] | None = None) -> tuple[str, float]:
    """The best (method, accuracy) among methods trained and tested on the reference.

    Chance baselines (registry: they measure no capability) and the methods of ``ineligible`` (method -> why: a
    live method whose training loss stayed near chance, a degenerate fit) are left out; ties go to the first
    method in the mapping's order.
    """
    methods = registry.all_methods()
    ineligible = ineligible or {}
    candidates = {m: a for m, a in in_distribution.items()
                  if (m not in methods or methods[m].counts_as_capability) and not math.isnan(a) and m not in ineligible}
    if not candidates:
        raise ValueError("no eligible method was trained and tested on the target reference")
    best = max(candidates, key=lambda method: candidates[method])
    return best, candidates[best]


def excluded_text(ineligible: Mapping[str, str]) -> str:
    """'lora (barely trained: ...); lat (degenerate: ...)' for results.csv."""
    return "; ".join(f"{method} ({why.replace('; ', ', ')})" for method, why in ineligible.items())


def excluded_methods(text: str) -> list[str]:
    """The methods an ``excluded_text`` names."""
    return [part.split(" (", 1)[0] for part in text.split("; ") if part]


class EvaluationIndex:
    """Evaluations by (method, trained_on, tested_on); untrained methods match any training set."""

    def __init__(self, evaluations: Iterable[Evaluation] = ()) -> None:
        self._by_key: dict[tuple[str, str, str], Evaluation] = {}
        for evaluation in evaluations:
            self.add(evaluation)

    def add(self, evaluation: Evaluation) -> None:
        self._by_key[(evaluation.method, evaluation.trained_on, evaluation.tested_on)] = evaluation

    def get(self, method: str, trained_on: str, tested_on: str) -> Evaluation | None:
        return self._by_key.get((method, trained_on, tested_on)) or self._by_key.get((method, UNTRAINED, tested_on))

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(method for method, _, _ in self._by_key))


class MissingEvaluation(LookupError):
    """A result row needs an evaluation that was not run."""


def _need(index: EvaluationIndex, method: str, trained_on: str, tested_on: str) -> Evaluation:
    found = index.get(method, trained_on, tested_on)
    if found is None:
        raise MissingEvaluation(f"no evaluation of {method} trained on {trained_on or '(nothing)'} tested on {tested_on}")
    return found


def rows_with_evaluations(
    shifts: Iterable[Shift],
    evaluations: Iterable[Evaluation],
    methods: Iterable[str] | None = None,
    training_set: Callable[[Shift], str] = lambda shift: shift.source,
    *,
    ineligible: Callable[[Evaluation], str | None] = lambda evaluation: None,
    n_layers: int | None = None,
    ttc_methods: Iterable[str] | None = None,
) -> list[tuple[ResultRow, RowEvaluations]]:
    """One ResultRow per shift x method, from the runner's evaluations, with the evaluations it came from.

    ``training_set`` names what each method was fitted on for a shift (the source, or the source
    mixed with a few target examples in the sensitivity analysis). TTC is taken over ``ttc_methods`` (None: every
    method) that have an in-distribution evaluation on the reference, but those ``ineligible`` names a reason
    for (a live method that hardly trained) and degenerate ones. ``n_layers`` (the model's blocks) gives each
    row its relative depth.
    """
    index = evaluations if isinstance(evaluations, EvaluationIndex) else EvaluationIndex(evaluations)
    methods = list(methods) if methods is not None else index.methods
    rows = []
    for shift in shifts:
        reference = shift.reference
        in_distribution, excluded = {}, {}
        for method in index.methods if ttc_methods is None else list(ttc_methods):
            found = index.get(method, reference, reference)
            if found is not None:
                in_distribution[method] = found.accuracy
                spec = registry.all_methods().get(method)
                why = ineligible(found) or (f"degenerate: {found.degenerate}" if found.degenerate else None)
                if why and (spec is None or spec.counts_as_capability):
                    excluded[method] = why
        ttc_method, ttc = target_tuned_capability(in_distribution, excluded)
        ttc_evaluation = _need(index, ttc_method, reference, reference)
        zero_shot_evaluation = _need(index, ZERO_SHOT, UNTRAINED, shift.target)
        zero_shot = zero_shot_evaluation.accuracy
        trained_on = training_set(shift)
        for method in methods:
            target = _need(index, method, trained_on, shift.target)
            source = _need(index, method, trained_on, shift.source)
            rows.append((ResultRow(
                source=shift.source, target=shift.target, target_reference=reference, label=shift.label,
                category=shift.category, method=method, layer=target.layer,
                generalization_accuracy=target.accuracy, source_accuracy=source.accuracy,
                zero_shot_accuracy=zero_shot, target_tuned_capability=ttc,
                differential_elicitation=differential_elicitation(target.accuracy, zero_shot, ttc),
                elicitation=elicitation(target.accuracy, ttc),
                auroc=target.auroc, brier=target.brier, rms_calibration_error=target.rms_calibration_error,
                target_tuned_method=ttc_method, validation_pairs=target.validation_pairs,
                depth=relative_depth(target.layer, n_layers), n_layers=n_layers if target.layer is not None else None,
                degenerate=target.degenerate or source.degenerate or "",
                target_tuned_excluded=excluded_text(excluded), interval_covers=interval_covers(target),
            ), RowEvaluations(target, source, zero_shot_evaluation, ttc_evaluation)))
    return rows
