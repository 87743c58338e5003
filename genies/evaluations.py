"""The runner's cache of finished work: one JSON file per evaluation, and the "done" checks.

An evaluation file is written only after its metrics are computed (via a temporary file and a
rename), so its presence means the step is done; a second run reads these files and does no
model work. It keeps each test example's outcome (pairs, correct pairs), which the report's
bootstrap resamples; a file without them (written before they were kept) counts as not done, so
the next run recomputes that evaluation.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

from actstore.errors import UserError
from actstore.store import find_store
from genies.generalization import Evaluation, ResultRow, RowEvaluations
from genies.plan import DoneChecks
from probes.metrics import ExampleOutcomes, Metrics

OUTCOMES_KEY = "outcomes"


def evaluation_from_metrics(method: str, trained_on: str, tested_on: str, metrics: Metrics, layer: int | None = None,
                            outcomes: ExampleOutcomes | None = None, validation_pairs: int | None = None) -> Evaluation:
    """The shared metrics module's result (probes.metrics.compute_metrics) as one Evaluation."""
    return Evaluation(method=method, trained_on=trained_on, tested_on=tested_on, accuracy=metrics.accuracy, layer=layer,
                      auroc=metrics.auroc, brier=metrics.brier, rms_calibration_error=metrics.rms_calibration_error,
                      outcomes=outcomes, validation_pairs=validation_pairs)


def evaluation_record(evaluation: Evaluation) -> dict:
    """JSON-ready: NaN -> null, outcomes as lists."""
    record = {f.name: getattr(evaluation, f.name) for f in fields(evaluation) if f.name != OUTCOMES_KEY}
    record = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
    if evaluation.outcomes is not None:
        record[OUTCOMES_KEY] = evaluation.outcomes.as_dict()
    return record


def evaluation_from_record(record: dict) -> Evaluation:
    outcomes = record.get(OUTCOMES_KEY)
    return Evaluation(**{**record, OUTCOMES_KEY: None if outcomes is None else ExampleOutcomes.from_dict(outcomes)})


def save_evaluation(path: Path, evaluation: Evaluation) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = evaluation_record(evaluation)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_evaluation(path: Path) -> Evaluation:
    path = Path(path)
    try:
        return evaluation_from_record(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as err:
        raise UserError(f"{path}: not a saved evaluation ({err}); delete it to recompute") from None


def store_is_complete(url: str) -> bool:
    store = find_store(url)
    return bool(store is not None and store.meta.get("complete"))


def is_done(path: Path) -> bool:
    """A fit directory exists; an evaluation file exists and keeps its per-example outcomes."""
    path = Path(path)
    if path.suffix != ".json":
        return path.exists()
    try:
        return OUTCOMES_KEY in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
        return False


def filesystem_checks() -> DoneChecks:
    """Done = a complete store at the URL; a fit directory, or an evaluation file with outcomes, at the path."""
    return DoneChecks(store_complete=store_is_complete, path_exists=is_done)


ROW_OUTCOMES_FILE = "outcomes.json"  # RUN_DIR: the evaluations behind each results.csv row, with their outcomes
ROLES = ("generalization", "source", "zero_shot", "target_tuned")


def write_row_evaluations(path: Path, rows: list[tuple[ResultRow, RowEvaluations]]) -> Path:
    """Each evaluation once (by key), then per row the keys of its four evaluations."""
    evaluations: dict[str, dict] = {}
    index = []
    for row, found in rows:
        keys = {}
        for role in ROLES:
            evaluation = getattr(found, role)
            evaluations.setdefault(evaluation.key, evaluation_record(evaluation))
            keys[role] = evaluation.key
        index.append({"source": row.source, "target": row.target, "method": row.method, "evaluations": keys})
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"evaluations": evaluations, "rows": index}, separators=(",", ":")) + "\n",
                   encoding="utf-8")
    tmp.replace(path)
    return path


def read_row_evaluations(run_dir: Path) -> dict[tuple[str, str, str], RowEvaluations] | None:
    """{(source, target, method): RowEvaluations} from RUN_DIR/outcomes.json; None when the run has none."""
    path = Path(run_dir) / ROW_OUTCOMES_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        evaluations = {key: evaluation_from_record(value) for key, value in record["evaluations"].items()}
        return {(r["source"], r["target"], r["method"]): RowEvaluations(*(evaluations[r["evaluations"][role]] for role in ROLES))
                for r in record["rows"]}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as err:
        raise UserError(f"{path}: not a valid outcomes file ({err}); rerun `genies run` to rewrite it") from None
