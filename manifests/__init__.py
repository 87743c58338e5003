"""Shift manifests, shipped as JSON data beside this file (model aliases: common/model_aliases.json).

- ``genies.json``: the 15 GENIES shifts, labels and categories as written in GENIES.json.
- ``all.json``: the 56 distinct shifts of the reference's ``distribution_shifts/all.json``
  (see README.md here for why the reference lists 69).
- ``demo.json``: the bundled demo mini-benchmark's shifts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common import UserError, read_json
from common.names import check_name

HERE = Path(__file__).resolve().parent
NAMED = ("genies", "all", "demo")
LABELS = ("extreme", "probing")


@dataclass(frozen=True)
class Shift:
    source: str
    target: str
    label: str
    category: str
    target_reference: str | None = None

    @property
    def reference(self) -> str:
        """Where target-tuned capability is measured: target_reference, else the target."""
        return self.target_reference or self.target

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"


def manifest_path(name_or_path: str) -> Path:
    if name_or_path in NAMED:
        return HERE / f"{name_or_path}.json"
    path = Path(name_or_path)
    if not path.is_file():
        raise UserError(f"{name_or_path}: not a manifest name ({', '.join(NAMED)}) nor a file")
    return path


def load_manifest(name_or_path: str) -> list[Shift]:
    path = manifest_path(name_or_path)
    entries = read_json(path)
    if not isinstance(entries, list):
        raise UserError(f"{path}: a manifest is a JSON list of shifts")
    shifts = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"source", "target"} <= entry.keys():
            raise UserError(f"{path}: shift {index}: needs at least 'source' and 'target'")
        label = entry.get("label", "unlabelled")
        if label not in LABELS + ("unlabelled",):
            raise UserError(f"{path}: shift {index}: label must be one of {', '.join(LABELS)}, got {label!r}")
        reference = entry.get("target_reference")
        for key in ("source", "target", *(("target_reference",) if reference else ())):
            try:
                check_name(entry[key])
            except UserError as err:
                raise UserError(f"{path}: shift {index}: {key} {err}") from None
        shifts.append(
            Shift(
                source=entry["source"],
                target=entry["target"],
                label=label,
                category=entry.get("category", "uncategorised"),
                target_reference=reference if reference and reference != entry["target"] else None,
            )
        )
    return shifts
