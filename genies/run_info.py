"""RUN_DIR/run.json: what `genies run` was asked (settings first, so a crashed run is not mixed with
others), what each finished run cost (its history), and the sha256 of the results.csv it wrote."""

from __future__ import annotations

import json
from pathlib import Path

from common import UserError, read_json, write_text_atomic

RUN_INFO_FILE = "run.json"
RESULTS_CHECKSUM = "results_sha256"  # what `genies run` wrote to results.csv
HISTORY_KEYS = ("stores_extracted", "fits_run", "evaluations_run", "model_loads")


def read_run_info(run_dir: Path) -> dict:
    """RUN_DIR/run.json, or {} for a run directory without one."""
    path = Path(run_dir) / RUN_INFO_FILE
    if not path.is_file():
        return {}
    info = read_json(path)
    if not isinstance(info, dict):
        raise UserError(f"{path}: expected a JSON object")
    return info


def write_run_info(run_dir: Path, settings: dict, work: dict) -> Path:
    """Write the settings and ``work`` (empty before the run's steps); a finished run (non-empty
    ``work``) adds an entry to the history, so a rerun that reuses everything keeps the first run's cost."""
    info = {**settings, **work}
    info["history"] = read_run_info(run_dir).get("history", [])
    if work:
        info["history"].append({k: info[k] for k in ("started_at", "wall_time_s", *HISTORY_KEYS) if k in info})
    return write_text_atomic(Path(run_dir) / RUN_INFO_FILE, json.dumps(info, indent=1) + "\n")
