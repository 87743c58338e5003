"""RUN_DIR/results.csv: one row per shift x method. Writing, and reading with clear errors."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import fields
from pathlib import Path

from common.atomic import file_sha256
from common import UserError, write_text_atomic
from genies.generalization import INTERVAL_METRICS, ResultRow
from genies.evaluations import ROW_OUTCOMES_FILE, read_outcomes_record
from genies.run_info import RESULTS_CHECKSUM, RUN_INFO_FILE, read_run_info

RESULTS_FILE = "results.csv"
INTERVAL_COLUMNS = tuple(f"{m}_{end}" for m in INTERVAL_METRICS for end in ("low", "high"))


BESIDE_LAYER = ("depth", "n_layers", "validation_pairs")  # right after the layer, in this order


def _column_order() -> tuple[str, ...]:
    """ResultRow's fields, each interval's bounds right after its metric; the relative depth, the model's layer
    count and the validation size after the layer."""
    order = []
    for name in (f.name for f in fields(ResultRow)):
        if name in INTERVAL_COLUMNS or name in BESIDE_LAYER:
            continue
        order.append(name)
        if name in INTERVAL_METRICS:
            order += [f"{name}_low", f"{name}_high"]
        if name == "layer":
            order += BESIDE_LAYER
    return tuple(order)


COLUMNS = _column_order()
TEXT_COLUMNS = ("source", "target", "target_reference", "label", "category", "method")
FLOAT_COLUMNS = INTERVAL_METRICS
OPTIONAL_FLOAT_COLUMNS = ("auroc", "brier", "rms_calibration_error", "depth", *INTERVAL_COLUMNS)
OPTIONAL_TEXT_COLUMNS = ("target_tuned_method", "degenerate", "target_tuned_excluded", "interval_covers")
# Files written by other tools (or before these were kept) may omit these; everything else is required.
OPTIONAL_COLUMNS = (*OPTIONAL_TEXT_COLUMNS, "validation_pairs", "n_layers", *INTERVAL_COLUMNS, "depth")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_results(path: Path, rows: list[ResultRow]) -> Path:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(getattr(row, column)) for column in COLUMNS])
    return write_text_atomic(path, text.getvalue())


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
    def integer(column: str) -> int | None:
        text = (record.get(column) or "").strip()
        try:
            return int(text) if text else None
        except ValueError:
            raise UserError(f"{path}: line {line}: {column} is not an integer ({text!r})") from None

    return ResultRow(
        **texts,
        layer=integer("layer"),
        validation_pairs=integer("validation_pairs"),
        n_layers=integer("n_layers"),
        **{c: number(c, optional=False) for c in FLOAT_COLUMNS},
        **{c: number(c, optional=True) for c in OPTIONAL_FLOAT_COLUMNS},
        **{c: (record.get(c) or "").strip() for c in OPTIONAL_TEXT_COLUMNS},
    )


def load_run(run_dir: Path) -> list[ResultRow]:
    """The rows of RUN_DIR/results.csv, refused unless a record of the run vouches for them: the checksum
    run.json and outcomes.json each keep of the results.csv `genies run` wrote."""
    path = results_path(run_dir)
    vouchers = results_vouchers(Path(run_dir))
    if not vouchers:
        raise UserError(f"{path}: no record of the run vouches for it (neither {RUN_INFO_FILE} nor "
                        f"{ROW_OUTCOMES_FILE} keeps its checksum); run the `genies run` that made it again to "
                        "rewrite them (it reuses every finished step)")
    actual = file_sha256(path)
    for record, recorded in vouchers.items():
        if recorded != actual:
            raise UserError(f"{path}: changed since `genies run` wrote it (its checksum is not the one {record} "
                            "keeps); run the same `genies run` command again to rewrite it (it reuses every finished "
                            "step)")
    return read_results(path)


def results_vouchers(run_dir: Path) -> dict[str, str]:
    """{record file: the results.csv checksum it keeps}, for run.json and outcomes.json where present."""
    found = {}
    recorded = read_run_info(run_dir).get(RESULTS_CHECKSUM)
    if recorded:
        found[RUN_INFO_FILE] = recorded
    outcomes = run_dir / ROW_OUTCOMES_FILE
    if outcomes.is_file():
        recorded = read_outcomes_record(outcomes).get(RESULTS_CHECKSUM)
        if recorded:
            found[ROW_OUTCOMES_FILE] = recorded
    return found


def unchecked_records(run_dir: Path) -> list[str]:
    """What a reader of the run's results cannot check, because a record of the run is missing."""
    run_dir = Path(run_dir)
    notes = []
    if not (run_dir / RUN_INFO_FILE).is_file():
        notes.append(f"{run_dir}: {RUN_INFO_FILE} is missing: the run's settings, model and data fingerprints are "
                     f"unknown (results.csv checked against {ROW_OUTCOMES_FILE})")
    if not (run_dir / ROW_OUTCOMES_FILE).is_file():
        notes.append(f"{run_dir}: {ROW_OUTCOMES_FILE} is missing: per-example outcomes are unknown, so intervals "
                     "resample shifts only")
    return notes
