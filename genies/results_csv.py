"""RUN_DIR/results.csv: one row per shift x method. Writing, and reading with clear errors."""

from __future__ import annotations

import csv
import math
from dataclasses import astuple, fields
from pathlib import Path

from actstore.errors import UserError
from genies.generalization import ResultRow

RESULTS_FILE = "results.csv"
COLUMNS = tuple(f.name for f in fields(ResultRow))
TEXT_COLUMNS = ("source", "target", "target_reference", "label", "category", "method")
FLOAT_COLUMNS = ("generalization_accuracy", "source_accuracy", "zero_shot_accuracy", "target_tuned_capability",
                 "differential_elicitation", "elicitation")
OPTIONAL_FLOAT_COLUMNS = ("auroc", "brier", "rms_calibration_error")
# Files written by other tools may omit these; everything else is required.
OPTIONAL_COLUMNS = ("target_tuned_method",)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_results(path: Path, rows: list[ResultRow]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_cell(v) for v in astuple(row)])
    tmp.replace(path)
    return path


def results_path(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found (is {run_dir} the --out of a `genies run`?)")
    return path


def read_results(path: Path) -> list[ResultRow]:
    """Parse a results.csv; any malformed content is a UserError naming the file and line."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in COLUMNS if c not in header and c not in OPTIONAL_COLUMNS]
            if missing:
                raise UserError(f"{path}: not a results.csv (missing column(s) {', '.join(missing)})")
            rows = [_parse(path, line, record) for line, record in enumerate(reader, start=2)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path}: unreadable CSV ({err})") from None
    if not rows:
        raise UserError(f"{path}: no result rows")
    return rows


def _parse(path: Path, line: int, record: dict) -> ResultRow:
    def number(column: str, optional: bool) -> float | None:
        text = (record.get(column) or "").strip()
        if not text:
            if optional:
                return None
            raise UserError(f"{path}: line {line}: empty {column}")
        try:
            return float(text)
        except ValueError:
            raise UserError(f"{path}: line {line}: {column} is not a number ({text!r})") from None

    if None in record:  # more cells than header columns
        raise UserError(f"{path}: line {line}: more cells than columns")
    texts = {c: (record.get(c) or "").strip() for c in TEXT_COLUMNS}
    for column in ("source", "target", "method"):
        if not texts[column]:
            raise UserError(f"{path}: line {line}: empty {column}")
    texts["target_reference"] = texts["target_reference"] or texts["target"]
    texts["label"] = texts["label"] or "unlabelled"
    texts["category"] = texts["category"] or "uncategorised"
    layer_text = (record.get("layer") or "").strip()
    try:
        layer = int(layer_text) if layer_text else None
    except ValueError:
        raise UserError(f"{path}: line {line}: layer is not an integer ({layer_text!r})") from None
    return ResultRow(
        **texts,
        layer=layer,
        **{c: number(c, optional=False) for c in FLOAT_COLUMNS},
        **{c: number(c, optional=True) for c in OPTIONAL_FLOAT_COLUMNS},
        target_tuned_method=(record.get("target_tuned_method") or "").strip(),
    )


def load_run(run_dir: Path) -> list[ResultRow]:
    return read_results(results_path(run_dir))
