"""Summaries over a whole data directory: counts per distribution and validation of all files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distributions.split_file import Problem, read_examples, validate_file
from distributions.data import SPLITS, DataDirs, distribution_dir, list_distributions
from common import UserError


@dataclass(frozen=True)
class DistributionSummary:
    name: str
    n_train: int | None
    n_test: int | None
    responses: str  # "4", or "2-4" when the count varies

    def as_row(self) -> dict:
        return {"distribution": self.name, "train": _count(self.n_train), "test": _count(self.n_test),
                "responses/example": self.responses}


@dataclass
class ValidationReport:
    n_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def n_bad(self) -> int:
        return len({p.path.parent for p in self.problems})


def summarize(data_dir: DataDirs | Path) -> list[DistributionSummary]:
    summaries = []
    for name in list_distributions(data_dir):
        counts, sizes = {}, set()
        for split in SPLITS:
            try:
                examples, _ = read_examples(distribution_dir(data_dir, name) / f"{split}.json")
            except UserError:
                counts[split] = None
                continue
            counts[split] = len(examples)
            sizes |= {len(e["responses"]) for e in examples if isinstance(e, dict) and isinstance(e.get("responses"), dict)}
        span = "?" if not sizes else str(min(sizes)) if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"
        summaries.append(DistributionSummary(name, counts["train"], counts["test"], span))
    return summaries


def validate_all(data_dir: DataDirs | Path, names: tuple[str, ...] | list[str] = ()) -> ValidationReport:
    known = list_distributions(data_dir)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"{data_dir}: unknown distribution(s) {', '.join(unknown)}")
    report = ValidationReport()
    for name in names or known:
        report.n_checked += 1
        for split in SPLITS:
            report.problems += validate_file(distribution_dir(data_dir, name) / f"{split}.json")
    return report


def _count(n: int | None) -> str:
    return "invalid" if n is None else str(n)
