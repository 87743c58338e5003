"""The runner's cache of finished work: one JSON file per evaluation, and the "done" checks.

An evaluation file is written only after its metrics are computed (via a temporary file and a
rename) and records the fingerprints of the data files it depends on; it is done while those
files are unchanged, so a second run reads these files and does no model work. A fit directory
is done when it is sealed (actstore/atomic.py) with the same fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

from actstore.atomic import is_complete, read_marker, write_text_atomic
from actstore.data import fingerprint, resolve_data_dir, split_path
from actstore.errors import UserError
from actstore.store import find_store
from genies.generalization import Evaluation
from genies.plan import DataFingerprints, DoneChecks
from probes.metrics import Metrics


def evaluation_from_metrics(method: str, trained_on: str, tested_on: str, metrics: Metrics, layer: int | None = None) -> Evaluation:
    """The shared metrics module's result (probes.metrics.compute_metrics) as one Evaluation."""
    return Evaluation(method=method, trained_on=trained_on, tested_on=tested_on, accuracy=metrics.accuracy, layer=layer,
                      auroc=metrics.auroc, brier=metrics.brier, rms_calibration_error=metrics.rms_calibration_error)


DATA_KEY = "data"  # the data fingerprints an evaluation was computed from
CHECKSUM_KEY = "checksum"  # sha256 of the rest of the record: an edited or damaged file is never used


def save_evaluation(path: Path, evaluation: Evaluation, data: DataFingerprints | None = None) -> Path:
    record = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(evaluation).items()}
    record[DATA_KEY] = data or {}
    record[CHECKSUM_KEY] = _checksum(record)
    return write_text_atomic(path, json.dumps(record, indent=1) + "\n")


def _checksum(record: dict) -> str:
    body = {key: value for key, value in record.items() if key != CHECKSUM_KEY}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _read_record(path: Path) -> dict | None:
    """The saved record, or None when it is unreadable or does not match its checksum."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get(CHECKSUM_KEY) != _checksum(record):
        return None
    return record


def load_evaluation(path: Path) -> Evaluation:
    path = Path(path)
    record = _read_record(path)
    if record is None:
        raise UserError(f"{path}: not a saved evaluation, or changed since it was saved (checksum mismatch); "
                        "delete it to recompute")
    try:
        return Evaluation(**{k: v for k, v in record.items() if k not in (DATA_KEY, CHECKSUM_KEY)})
    except TypeError as err:
        raise UserError(f"{path}: not a saved evaluation ({err}); delete it to recompute") from None


def store_is_complete(url: str) -> bool:
    store = find_store(url)
    return bool(store is not None and store.meta.get("complete"))


def recorded_data(where: str | Path) -> DataFingerprints | None:
    """The data fingerprints recorded by a store (URL), a sealed fit directory or an evaluation file."""
    if isinstance(where, str):
        store = find_store(where)
        meta = store.meta if store is not None else {}
        return {f"{meta['dataset']}/{meta['split']}": meta["fingerprint"]} if meta.get("fingerprint") else None
    if where.is_dir():
        return read_marker(where).get(DATA_KEY) if is_complete(where) else None
    record = _read_record(where)
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


def filesystem_checks(data_dir: str | None = None) -> DoneChecks:
    """Done = a complete store at the URL, a sealed directory or a file at the path; each made from
    the data files as they are now in ``data_dir``."""
    files = DataFiles(data_dir)
    return DoneChecks(store_complete=store_is_complete, path_exists=_finished, recorded_data=recorded_data,
                      data_fingerprint=files.fingerprint)


def _finished(path: Path) -> bool:
    return is_complete(path) if path.is_dir() else path.is_file()
