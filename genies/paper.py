"""The paper's published numbers, shipped as data (manifests/paper-results.csv).

``derive_paper_results`` turns the reference repository's per-evaluation rows (one per
``results/evaluations/<intervention>/<model>-<source>/<target>.json``, extracted into
../shared/reference/paper-results.csv) into one compact row per (shift, intervention):

- generalization accuracy: ``eval_accuracy`` of the intervention trained on the source, on the target;
- source accuracy: the same model on the source;
- zero-shot accuracy: the published baseline, i.e. the ``zero_shot`` evaluation under the source's
  directory (the base-model re-run ``zero_shot/<model>/<target>`` differs slightly and is only a
  fallback);
- target-tuned capability: the best in-distribution accuracy on the target reference over the
  interventions the reference compared (TTC_INTERVENTIONS). The reference's own TTC files differ
  from this maximum in a few cases (its bug list, §6.10).

Regenerate with ``python -m genies.paper ../shared/reference/paper-results.csv``.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import astuple, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import registry
from manifests import HERE as MANIFEST_DIR
from manifests import Shift, load_manifest

PAPER_MODEL = "llama-30b"
SHIPPED = MANIFEST_DIR / "paper-results.csv"
INTERVENTIONS = registry.PAPER_INTERVENTIONS
TTC_INTERVENTIONS = ("lora_fine_tuning", "mms", "prompt_tuning", "few_shot", "zero_shot")
# Which of our methods is the same as one of the paper's interventions, and why the others are not,
# is declared by each method in the registry (the registry package: paper_intervention, stands_in_for, paper_note).
DIGITS = 6


@dataclass(frozen=True)
class PaperRow:
    model: str
    source: str
    target: str
    target_reference: str
    intervention: str
    generalization_accuracy: float
    source_accuracy: float | None
    zero_shot_accuracy: float | None
    target_tuned_capability: float | None
    target_tuned_intervention: str

    @property
    def differential_elicitation(self) -> float | None:
        if self.zero_shot_accuracy is None or not self.target_tuned_capability:
            return None
        return (self.generalization_accuracy - self.zero_shot_accuracy) / self.target_tuned_capability


COLUMNS = tuple(f.name for f in fields(PaperRow))


def derive_paper_results(reference_rows: Iterable[dict], shifts: Iterable[Shift], model: str = PAPER_MODEL) -> list[PaperRow]:
    """Compact per-(shift, intervention) rows for ``model`` from the reference's evaluation rows."""
    accuracy: dict[tuple[str, str, str], float] = {}
    for row in reference_rows:
        if row["model"] == model and row["eval_accuracy"] not in ("", None):
            accuracy[(row["intervention"], row["source"], row["target"])] = round(float(row["eval_accuracy"]), DIGITS)
    out = []
    for shift in dict.fromkeys(shifts):
        reference = shift.reference
        zero_shot = accuracy.get(("zero_shot", shift.source, shift.target), accuracy.get(("zero_shot", "", shift.target)))
        in_distribution = {i: accuracy[(i, reference, reference)] for i in TTC_INTERVENTIONS if (i, reference, reference) in accuracy}
        ttc_intervention = max(in_distribution, key=lambda i: in_distribution[i]) if in_distribution else ""
        for intervention in INTERVENTIONS:
            generalization = accuracy.get((intervention, shift.source, shift.target))
            if generalization is None:
                continue
            out.append(PaperRow(
                model=model, source=shift.source, target=shift.target, target_reference=reference,
                intervention=intervention, generalization_accuracy=generalization,
                source_accuracy=accuracy.get((intervention, shift.source, shift.source)),
                zero_shot_accuracy=zero_shot,
                target_tuned_capability=in_distribution.get(ttc_intervention),
                target_tuned_intervention=ttc_intervention,
            ))
    return out


def derive_from_reference_csv(path: Path, model: str = PAPER_MODEL) -> list[PaperRow]:
    """The shipped table, re-derived: every shift of the `all` manifest (which holds GENIES' 15)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return derive_paper_results(csv.DictReader(handle), load_manifest("all"), model)


def write_paper_results(path: Path, rows: list[PaperRow]) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(["" if v is None else v for v in astuple(row)] for row in rows)


def read_paper_results(path: Path = SHIPPED) -> list[PaperRow]:
    def number(text: str) -> float | None:
        return float(text) if text else None

    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [
            PaperRow(
                model=r["model"], source=r["source"], target=r["target"], target_reference=r["target_reference"],
                intervention=r["intervention"], generalization_accuracy=float(r["generalization_accuracy"]),
                source_accuracy=number(r["source_accuracy"]), zero_shot_accuracy=number(r["zero_shot_accuracy"]),
                target_tuned_capability=number(r["target_tuned_capability"]),
                target_tuned_intervention=r["target_tuned_intervention"],
            )
            for r in csv.DictReader(handle)
        ]


@lru_cache(maxsize=1)
def _shipped_index() -> dict[tuple[str, str, str], PaperRow]:
    return {(r.source, r.target, r.intervention): r for r in read_paper_results()}


def paper_rows(shifts: Iterable[tuple[str, str]]) -> list[PaperRow]:
    """Every shipped row (all interventions) of the given (source, target) shifts."""
    wanted = set(shifts)
    return [row for row in _shipped_index().values() if (row.source, row.target) in wanted]


def paper_figure(source: str, target: str, method: str) -> PaperRow | None:
    """The paper's llama-30b row for our ``method`` on this shift, if the paper ran a counterpart."""
    spec = registry.all_methods().get(method)
    intervention = spec.paper_intervention if spec else None
    return _shipped_index().get((source, target, intervention)) if intervention else None


if __name__ == "__main__":
    reference_csv = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/reference/paper-results.csv")
    rows = derive_from_reference_csv(reference_csv)
    write_paper_results(SHIPPED, rows)
    print(f"{len(rows)} rows -> {SHIPPED}")
