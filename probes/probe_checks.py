"""What a probe must satisfy before it scores anything, each failure one line naming the file.

A probe file edited by hand, damaged by a bad copy or written by a fit that diverged never
scores: missing keys or tensors, a temperature that is not a positive finite number, tensors
whose shapes disagree with each other or with the width the probe was fit on, and NaN or
infinite weights are refused here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from common import UserError
from probes.scorers import SCORERS, Scorer

REFIT = "refit the probe"
DOCUMENT_KEYS = {"method": str, "scorer": str, "scorer_config": dict, "temperature": (int, float)}


def check_document(document: object, path: Path) -> None:
    """probe.json has every key, of the right type, and a usable temperature."""
    if not isinstance(document, dict):
        raise UserError(f"{path}: not a probe file (expected a JSON object, got {type(document).__name__})")
    for key, kind in DOCUMENT_KEYS.items():
        if key not in document:
            raise UserError(f"{path}: damaged probe file: no {key!r} ({REFIT})")
        value = document[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise UserError(f"{path}: damaged probe file: {key!r} is {value!r}, "
                            f"not a {'number' if key == 'temperature' else kind.__name__} ({REFIT})")
    temperature = float(document["temperature"])
    if not (math.isfinite(temperature) and temperature > 0):
        raise UserError(f"{path}: damaged probe file: temperature {temperature} is not a positive finite number ({REFIT})")
    if not isinstance(document.get("trained_on", {}), dict):
        raise UserError(f"{path}: damaged probe file: 'trained_on' is not an object ({REFIT})")


def scorer_from_files(document: dict, tensors: dict[str, np.ndarray], config_path: Path, tensors_path: Path) -> Scorer:
    """The scorer a checked probe.json and its tensors describe, checked against each other and the
    width recorded in ``trained_on``."""
    scorer_class = SCORERS[document["scorer"]]
    config = document["scorer_config"]
    for key in scorer_class.CONFIG_KEYS:
        if key not in config:
            raise UserError(f"{config_path}: damaged probe file: scorer_config has no {key!r} ({REFIT})")
    for name in scorer_class.TENSOR_NAMES:
        if name not in tensors:
            raise UserError(f"{tensors_path}: damaged probe file: no tensor {name!r} "
                            f"(a {scorer_class.kind} probe has {', '.join(scorer_class.TENSOR_NAMES)}; {REFIT})")
    try:
        scorer = scorer_class.from_state(config, tensors)
    except (TypeError, ValueError, KeyError) as err:
        raise UserError(f"{config_path}: damaged probe file: unreadable scorer_config {config!r} "
                        f"({type(err).__name__}: {err}; {REFIT})") from None
    problem = scorer.shape_problem() or scorer.width_problem(document.get("trained_on", {}))
    if problem:
        raise UserError(f"{tensors_path}: damaged probe file: {problem} ({REFIT})")
    problem = nonfinite_weights(scorer)
    if problem:
        raise UserError(f"{tensors_path}: {problem} ({REFIT})")
    return scorer


def nonfinite_weights(scorer: Scorer) -> str | None:
    """'the probe has NaN weights ...' when any weight is NaN or infinite, else None."""
    config, tensors = scorer.state()
    numbers = {**{name: np.asarray(value) for name, value in tensors.items()},
               **{key: np.asarray(value, dtype=np.float64) for key, value in config.items() if key in ("bias", "sign")}}
    for name, value in numbers.items():
        n_nan, n_inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
        if n_nan or n_inf:
            what = " and ".join(f"{n} {label}" for n, label in ((n_nan, "NaN"), (n_inf, "infinite")) if n)
            return f"the probe has NaN or infinite weights: {what} of the {value.size} values of {name!r}"
    return None
