"""The runner's cache of finished work: one JSON file per evaluation, and the "done" checks.

An evaluation file is written only after its metrics are computed (via a temporary file and a
rename), so its presence means the step is done; a second run reads these files and does no
model work.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from actstore.errors import UserError
from actstore.store import find_store
from genies.generalization import Evaluation
from genies.plan import DoneChecks
from probes.metrics import Metrics


def evaluation_from_metrics(method: str, trained_on: str, tested_on: str, metrics: Metrics, layer: int | None = None) -> Evaluation:
    """The shared metrics module's result (probes.metrics.compute_metrics) as one Evaluation."""
    return Evaluation(method=method, trained_on=trained_on, tested_on=tested_on, accuracy=metrics.accuracy, layer=layer,
                      auroc=metrics.auroc, brier=metrics.brier, rms_calibration_error=metrics.rms_calibration_error)


def save_evaluation(path: Path, evaluation: Evaluation) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(evaluation).items()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_evaluation(path: Path) -> Evaluation:
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return Evaluation(**record)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as err:
        raise UserError(f"{path}: not a saved evaluation ({err}); delete it to recompute") from None


def store_is_complete(url: str) -> bool:
    store = find_store(url)
    return bool(store is not None and store.meta.get("complete"))


def filesystem_checks() -> DoneChecks:
    """Done = a complete store at the URL; a file or directory at the path."""
    return DoneChecks(store_complete=store_is_complete, path_exists=Path.exists)
