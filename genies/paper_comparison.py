"""The paper's llama-30b figures beside a run's: per method on the same shifts, and the correlation of
generalization with zero-shot accuracy, per method (the paper's statistic) and pooled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import registry
from genies.generalization import ResultRow
from genies.paper import paper_figure, paper_rows
from genies.summary import Correlation, mean, methods_in_order, pearson


@dataclass(frozen=True)
class PaperComparison:
    method: str
    intervention: str
    n_shifts: int  # shifts of this run that the paper also reports for the intervention
    generalization_accuracy: float
    differential_elicitation: float


def paper_comparisons(rows: Sequence[ResultRow]) -> dict[str, PaperComparison]:
    """Per method: the paper's means over the same shifts, where the paper ran a counterpart."""
    out = {}
    for method in methods_in_order(rows):
        shifts = dict.fromkeys((r.source, r.target) for r in rows if r.method == method)
        found = [p for p in (paper_figure(s, t, method) for s, t in shifts) if p is not None]
        if found:
            out[method] = PaperComparison(
                method, registry.paper_counterparts()[method], len(found),
                mean(p.generalization_accuracy for p in found), mean(p.differential_elicitation for p in found))
    return out


def paper_points(rows: Sequence[ResultRow]) -> list[tuple[tuple[str, str], float, float]]:
    """(shift, zero-shot, generalization) of the paper's interventions but zero_shot, on this run's shifts."""
    shifts = {(r.source, r.target) for r in rows}
    return [((p.source, p.target), p.zero_shot_accuracy, p.generalization_accuracy) for p in paper_rows(shifts)
            if p.intervention != "zero_shot" and p.zero_shot_accuracy is not None]


def paper_method_correlation(rows: Sequence[ResultRow], method: str) -> Correlation | None:
    """The paper's r over shifts for the same method (its counterpart), on the shifts this run has for it; None
    where the paper ran no counterpart."""
    shifts = dict.fromkeys((r.source, r.target) for r in rows if r.method == method)
    found = [p for p in (paper_figure(s, t, method) for s, t in shifts)
             if p is not None and p.zero_shot_accuracy is not None]
    if not found:
        return None
    return Correlation(method, len(found), pearson([p.zero_shot_accuracy for p in found],
                                                   [p.generalization_accuracy for p in found]))


def paper_zero_shot_correlation(rows: Sequence[ResultRow]) -> Correlation:
    """The paper's generalization-vs-zero-shot r over this run's shifts, pooled over its interventions."""
    points = paper_points(rows)
    return Correlation("paper", len(points), pearson([p[1] for p in points], [p[2] for p in points]))
