"""The runner's cache of finished work: one JSON file per evaluation, and the "done" checks.

An evaluation file is written only after its metrics are computed (via a temporary file and a
rename). It records the fingerprints of the data files it depends on and a checksum of itself,
and keeps each test example's outcome (pairs, correct pairs), which the report's bootstrap
resamples. It is done while its data files are unchanged, its checksum matches and it has its
outcomes (one written before they were kept is recomputed), so a second run reads these files
and does no model work. A fit directory is done when it is sealed (common/atomic.py) with the
same fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import fields
from pathlib import Path

import numpy as np

from common.atomic import is_complete, read_marker
from common import UserError, write_text_atomic
from genies.run_info import RESULTS_CHECKSUM
from distributions.split_file import fingerprint
from distributions.data import resolve_data_dir, split_path
from actstore.store import find_store
from actstore.store.growth import covers
from genies.generalization import DIRECTIONS, Evaluation, ResultRow, RowEvaluations
from genies.plan import DataFingerprints, DoneChecks
from common.metrics import ExampleOutcomes, Metrics

OUTCOMES_KEY = "outcomes"
REFIT_OUTCOMES_KEY = "refit_outcomes"
DATA_KEY = "data"  # the data fingerprints an evaluation was computed from
CHECKSUM_KEY = "checksum"  # sha256 of the rest of the record: an edited or damaged file is never used


def evaluation_from_metrics(method: str, trained_on: str, tested_on: str, metrics: Metrics, layer: int | None = None,
                            outcomes: ExampleOutcomes | None = None, validation_pairs: int | None = None,
                            compute_dtype: str | None = None, degenerate: str | None = None,
                            refit_outcomes: tuple[ExampleOutcomes, ...] | None = None,
                            refits: str | None = None) -> Evaluation:
    """The shared metrics module's result (common.metrics.compute_metrics) as one Evaluation. A chance baseline's
    directions (``refits`` "directions"): its accuracy is their mean, the fit's own among them."""
    accuracy = metrics.accuracy
    if refits == DIRECTIONS and refit_outcomes:
        accuracy = float(np.mean([accuracy, *(o.accuracy for o in refit_outcomes)]))
    return Evaluation(method=method, trained_on=trained_on, tested_on=tested_on, accuracy=accuracy, layer=layer,
                      auroc=metrics.auroc, brier=metrics.brier, rms_calibration_error=metrics.rms_calibration_error,
                      outcomes=outcomes, validation_pairs=validation_pairs, compute_dtype=compute_dtype,
                      degenerate=degenerate, refit_outcomes=refit_outcomes, refits=refits)


def evaluation_record(evaluation: Evaluation) -> dict:
    """JSON-ready: NaN -> null, outcomes as lists."""
    record = {f.name: getattr(evaluation, f.name) for f in fields(evaluation)
              if f.name not in (OUTCOMES_KEY, REFIT_OUTCOMES_KEY)}
    record = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
    if evaluation.outcomes is not None:
        record[OUTCOMES_KEY] = evaluation.outcomes.as_dict()
    if evaluation.refit_outcomes is not None:
        record[REFIT_OUTCOMES_KEY] = [outcomes.as_dict() for outcomes in evaluation.refit_outcomes]
    return record


def evaluation_from_record(record: dict) -> Evaluation:
    outcomes, refits = record.get(OUTCOMES_KEY), record.get(REFIT_OUTCOMES_KEY)
    return Evaluation(**{**record, OUTCOMES_KEY: None if outcomes is None else ExampleOutcomes.from_dict(outcomes),
                         REFIT_OUTCOMES_KEY: None if refits is None else tuple(ExampleOutcomes.from_dict(o)
                                                                                for o in refits)})


def save_evaluation(path: Path, evaluation: Evaluation, data: DataFingerprints | None = None) -> Path:
    record = evaluation_record(evaluation)
    record[DATA_KEY] = data or {}
    return write_text_atomic(path, json.dumps(sealed(record), indent=1) + "\n")


def sealed(record: dict) -> dict:
    """``record`` with the checksum of its contents."""
    return {**record, CHECKSUM_KEY: _checksum(record)}


def _checksum(record: dict) -> str:
    body = {key: value for key, value in record.items() if key != CHECKSUM_KEY}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_sealed(path: Path) -> dict | None:
    """The saved record, or None when it is unreadable or does not match its checksum."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get(CHECKSUM_KEY) != _checksum(record):
        return None
    return record


def load_evaluation(path: Path) -> Evaluation:
    path = Path(path)
    record = read_sealed(path)
    if record is None:
        raise UserError(f"{path}: not a saved evaluation, or changed since it was saved (checksum mismatch); "
                        "delete it to recompute")
    try:
        return evaluation_from_record({k: v for k, v in record.items() if k not in (DATA_KEY, CHECKSUM_KEY)})
    except (TypeError, KeyError, ValueError, AttributeError) as err:
        raise UserError(f"{path}: not a saved evaluation ({err}); delete it to recompute") from None


def store_is_complete(url: str, expected: dict | None = None) -> bool:
    """A complete store at ``url`` that was extracted with the ``expected`` settings (a store made
    otherwise at the same place, e.g. with other layers, is not this run's: see ``store_conflict``).
    ``layers: "all"`` means every layer."""
    store = find_store(url)
    return store is not None and bool(store.meta.get("complete")) and not _differing_settings(store, expected or {})


def store_conflict(url: str, expected: dict) -> str | None:
    """How a complete store at ``url`` differs from the ``expected`` settings, or None (no store, or the same)."""
    store = find_store(url)
    if store is None or not store.meta.get("complete"):
        return None
    differing = _differing_settings(store, expected)
    differing.pop("limit", None)  # fewer examples: extraction grows the store
    return "; ".join(f"{key}: stored {found!r}, this run {wanted!r}" for key, (found, wanted) in differing.items()) or None


def _differing_settings(store, expected: dict) -> dict[str, tuple]:
    from actstore.engine.store_identity import recorded_identity

    identity = recorded_identity(store)
    differing = {}
    for key, value in expected.items():
        if key == "limit":  # a store holds the first N examples and grows: enough of them is the same store
            if not covers(store.meta, value):
                differing[key] = (store.meta.get("limit"), value)
            continue
        if key == "layers" and value == "all":
            value = list(range(int(store.meta.get("model_n_blocks", -1)) + 1))
        if identity.get(key) != value:
            differing[key] = (identity.get(key), value)
    return differing


def recorded_data(where: str | Path) -> DataFingerprints | None:
    """The data fingerprints recorded by a store (URL), a sealed fit directory or an evaluation file."""
    if isinstance(where, str):
        store = find_store(where)
        meta = store.meta if store is not None else {}
        return {f"{meta['dataset']}/{meta['split']}": meta["fingerprint"]} if meta.get("fingerprint") else None
    if where.is_dir():
        return read_marker(where).get(DATA_KEY) if is_complete(where) else None
    record = read_sealed(where)
    return record.get(DATA_KEY) if record is not None else None


class DataFiles:
    """Fingerprints of the data files as they are now, each file hashed once per run."""

    def __init__(self, data_dir: str | None):
        self.data_dir = resolve_data_dir(data_dir)
        self._known: dict[tuple[str, str], str | None] = {}

    def fingerprint(self, dataset: str, split: str) -> str | None:
        if (dataset, split) not in self._known:
            path = split_path(self.data_dir, dataset, split)
            self._known[(dataset, split)] = fingerprint(path) if path.is_file() else None
        return self._known[(dataset, split)]


def is_done(path: Path) -> bool:
    """A sealed fit directory; an evaluation file that matches its checksum and keeps its per-example outcomes."""
    path = Path(path)
    if path.is_dir():
        return is_complete(path)
    record = read_sealed(path)
    return record is not None and OUTCOMES_KEY in record


def filesystem_checks(data_dir: str | None = None, store_settings: dict | None = None,
                      run_settings: str | None = None) -> DoneChecks:
    """Done = a complete store at the URL extracted with ``store_settings``, or a finished fit or
    evaluation at the path (``is_done``), each made from the data files as they are now in ``data_dir``
    (fits and evaluations: under the run settings ``run_settings``)."""
    files = DataFiles(data_dir)
    return DoneChecks(store_complete=lambda url: store_is_complete(url, store_settings), path_exists=is_done,
                      recorded_data=recorded_data, data_fingerprint=files.fingerprint, run_settings=run_settings)


ROW_OUTCOMES_FILE = "outcomes.json"  # RUN_DIR: the evaluations behind each results.csv row, with their outcomes
ROLES = ("generalization", "source", "zero_shot", "target_tuned")


def write_row_evaluations(path: Path, rows: list[tuple[ResultRow, RowEvaluations]], results_sha256: str) -> Path:
    """Each evaluation once (by key), then per row the keys of its four evaluations, and the checksum of the
    results.csv written from them (so that results.csv is vouched for without run.json)."""
    evaluations: dict[str, dict] = {}
    index = []
    for row, found in rows:
        keys = {}
        for role in ROLES:
            evaluation = getattr(found, role)
            evaluations.setdefault(evaluation.key, evaluation_record(evaluation))
            keys[role] = evaluation.key
        index.append({"source": row.source, "target": row.target, "method": row.method, "evaluations": keys})
    return write_text_atomic(path, json.dumps(sealed({"evaluations": evaluations, "rows": index,
                                                      RESULTS_CHECKSUM: results_sha256}),
                                              separators=(",", ":")) + "\n")


def read_outcomes_record(path: Path) -> dict:
    """RUN_DIR/outcomes.json as written, or a UserError."""
    record = read_sealed(path)
    if record is None:
        raise UserError(f"{path}: not a valid outcomes file, or changed since it was written (checksum mismatch); "
                        "rerun `genies run` to rewrite it")
    return record


def read_row_evaluations(run_dir: Path) -> dict[tuple[str, str, str], RowEvaluations] | None:
    """{(source, target, method): RowEvaluations} from RUN_DIR/outcomes.json; None when the run has none."""
    path = Path(run_dir) / ROW_OUTCOMES_FILE
    if not path.is_file():
        return None
    record = read_outcomes_record(path)
    try:
        evaluations = {key: evaluation_from_record(value) for key, value in record["evaluations"].items()}
        return {(r["source"], r["target"], r["method"]): RowEvaluations(*(evaluations[r["evaluations"][role]] for role in ROLES))
                for r in record["rows"]}
    except (TypeError, KeyError, ValueError, AttributeError) as err:
        raise UserError(f"{path}: not a valid outcomes file ({err}); rerun `genies run` to rewrite it") from None
