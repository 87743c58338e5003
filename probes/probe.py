"""A fitted probe's state (scorer + temperature + provenance) and its files: PROBE/probe.json +
PROBE/tensors.safetensors, sealed by PROBE/complete.json (common/atomic.py): a probe is saved
whole or not at all, and loading refuses one whose files changed since."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

from actstore import __version__
from common.atomic import atomic_directory, verify_directory
from common import UserError
from probes.probe_checks import check_document, nonfinite_weights, scorer_from_files
from probes.scorers import SCORERS, Scorer
from probes.sources import MODEL_KEYS, FeatureSource

PROBE_FORMAT = 1
CONFIG_FILE = "probe.json"
TENSORS_FILE = "tensors.safetensors"


@dataclass(frozen=True, eq=False)
class FittedProbe:
    """What fitting made, whole: an estimator holds one of these once fitted, and nothing changes it."""

    method: str
    scorer: Scorer
    temperature: float = 1.0
    trained_on: dict = field(default_factory=dict)  # model, model_id, hidden_size, dataset, split, fingerprint, url
    params: dict = field(default_factory=dict)  # the estimator's parameters, for the record
    notes: dict = field(default_factory=dict)  # what the caller recorded beside it (the runner: validation_pairs)

    def score(self, source: FeatureSource) -> np.ndarray:
        self.check_compatible(source)
        needs = self.scorer.needs()
        source.require(needs.views, heads=needs.heads, loglik=needs.loglik)
        scores = np.asarray(self.scorer.score(source), dtype=np.float64)
        bad = int((~np.isfinite(scores)).sum())
        weights = nonfinite_weights(self.scorer) if bad else None
        if weights:
            raise UserError(f"{source.name}: {bad} of {len(scores)} {self.method} scores are not finite because {weights}")
        if bad:
            raise UserError(f"{source.name}: {bad} of {len(scores)} {self.method} scores are not finite "
                            "(NaN or infinite activations or log-likelihoods in the store)")
        return scores

    def margins(self, source: FeatureSource) -> np.ndarray:
        return source.labels.margins(self.score(source))

    def check_compatible(self, source: FeatureSource) -> None:
        """Refuse activations from another model, prompt format or width than the training store's."""
        mine, theirs = self.trained_on, source.meta
        for key in MODEL_KEYS:
            if mine.get(key) and theirs.get(key) and mine[key] != theirs[key]:
                raise UserError(f"{source.name}: store is from model {theirs[key]!r}, "
                                f"but the {self.method} probe was fit on {mine[key]!r}")
        if prompt_format(mine) != prompt_format(theirs):
            raise UserError(f"{source.name}: store was extracted with --prompt-format {prompt_format(theirs)}, "
                            f"but the {self.method} probe was fit on --prompt-format {prompt_format(mine)} activations")
        if mine.get("hidden_size") and theirs.get("hidden_size") and mine["hidden_size"] != theirs["hidden_size"]:
            raise UserError(f"{source.name}: store has hidden size {theirs['hidden_size']}, "
                            f"but the {self.method} probe was fit on hidden size {mine['hidden_size']}")
        problem = self.scorer.width_problem(theirs)
        if problem:
            raise UserError(f"{source.name}: the {self.method} probe does not fit this store: {problem}")


PROVENANCE_KEYS = (*MODEL_KEYS, "prompt_format", "hidden_size", "n_heads", "head_dim", "dataset", "split", "fingerprint")


def prompt_format(meta: dict) -> str:
    """A store's (or a probe's training store's) prompt format; raw for those made before it was recorded."""
    return meta.get("prompt_format") or "raw"


def provenance(source: FeatureSource) -> dict:
    record = {key: source.meta[key] for key in PROVENANCE_KEYS if key in source.meta}
    url = getattr(source, "primary_url", None)
    return {**record, **({"url": url} if url else {})}


def save_fitted(probe: FittedProbe, directory: str | Path, record: dict | None = None) -> Path:
    """Save into ``directory`` (replacing what is there in one step); ``record`` goes into its
    completion marker (the runner keeps the data fingerprints the probe was fitted on there)."""
    directory = Path(directory)
    scorer_config, tensors = probe.scorer.state()
    document = {
        "format": PROBE_FORMAT,
        "software_version": __version__,
        "method": probe.method,
        "scorer": probe.scorer.kind,
        "scorer_config": scorer_config,
        "temperature": probe.temperature,
        "trained_on": probe.trained_on,
        "config": {**probe.params, **probe.notes},
    }
    with atomic_directory(directory, record) as staging:
        save_file({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in tensors.items()},
                  str(staging / TENSORS_FILE))
        (staging / CONFIG_FILE).write_text(json.dumps(document, indent=1, default=_json_default) + "\n")
    return directory


def read_fitted(directory: str | Path, param_names: Callable[[str], tuple[str, ...]]) -> FittedProbe:
    """The checked state saved in ``directory``; ``param_names(method)`` tells its parameters from its notes."""
    directory = Path(directory)
    config_path, tensors_path = directory / CONFIG_FILE, directory / TENSORS_FILE
    if not config_path.is_file() and not tensors_path.is_file():
        raise UserError(f"{directory}: not a saved probe (expected {CONFIG_FILE} and {TENSORS_FILE})")
    verify_directory(directory)
    try:
        document = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{config_path}: not valid JSON ({err})") from None
    check_document(document, config_path)
    if document.get("format") != PROBE_FORMAT or document["scorer"] not in SCORERS:
        raise UserError(f"{config_path}: unknown probe format {document.get('format')!r} / scorer {document['scorer']!r}")
    try:
        tensors = load_file(str(tensors_path))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise UserError(f"{tensors_path}: not a readable safetensors file ({err})") from None
    scorer = scorer_from_files(document, tensors, config_path, tensors_path)
    config = document.get("config") or {}
    names = param_names(document["method"])
    params = {k: v for k, v in config.items() if k in names}
    notes = {k: v for k, v in config.items() if k not in names}
    return FittedProbe(document["method"], scorer, float(document["temperature"]), document.get("trained_on", {}),
                       params, notes)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in probe.json")
