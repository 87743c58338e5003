"""Probes on arrays, as scikit-learn expects them: ``fit(X, y, groups)``.

The contract every method follows:

- ``X``: one row per (example, response), shape ``(sequences, width)``. A method that reads several
  views takes them side by side along the last axis, in the order of its views (``cra`` and ``ccs``:
  ``[h_yes, h_no]``, so a scaler in a pipeline standardizes both). A method that chooses its own sites
  (``mms-heads``, ``cra-heads``: heads; ``lat-stim``: layers) takes ``(sequences, sites, width)``.
  ``zero-shot`` takes one column: the response's total log-likelihood.
- ``y``: the response's score, 1.0 for the example's preferred response and 0.0 for the others.
- ``groups``: the example id of each row, so a method pairs the responses of one example. Without
  it (scikit-learn passes ``groups`` to the splitter only, unless metadata routing is on), rows must
  come one example after another with its preferred response first, as ``xy`` returns them: every
  ``y == 1`` row starts a new example.
"""

from __future__ import annotations

import numpy as np
from sklearn.exceptions import NotFittedError

from common import UserError
from probes.labels import Labels
from probes.sources import FeatureSource


class ArrayInputError(UserError, ValueError):
    """Arrays of the wrong shape or values (a ValueError too, as scikit-learn's checks expect)."""


class NotFitted(UserError, NotFittedError):
    """A probe asked to score before it was fitted."""


def is_arrays(x) -> bool:
    """Arrays (numpy, a DataFrame, nested lists of numbers), rather than stores or a source."""
    if isinstance(x, (str, bytes, FeatureSource)) or hasattr(x, "meta") and hasattr(x, "url"):
        return False
    if isinstance(x, (list, tuple)):
        return bool(x) and not isinstance(x[0], str) and not hasattr(x[0], "__fspath__") and not hasattr(x[0], "meta")
    return hasattr(x, "__array__") or hasattr(x, "shape")


def as_matrix(x, *, multi_site: bool, n_views: int, method: str) -> np.ndarray:
    """``X`` as float32, checked: 2-D (3-D for multi-site methods), finite, its width divisible by the views."""
    want = "(sequences, sites, width)" if multi_site else "(sequences, width)"
    if hasattr(x, "toarray") or hasattr(x, "todense"):
        raise ArrayInputError(f"{method}: sparse input is not supported; give X as a dense array of shape {want}")
    if np.iscomplexobj(x):
        raise ArrayInputError(f"{method}: Complex data not supported; X holds activations, real numbers")
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise ArrayInputError(f"{method}: X must be numbers of shape {want}") from None
    if x.ndim != (3 if multi_site else 2):
        raise ArrayInputError(f"{method}: X must have shape {want}, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[-1] == 0:
        count, what = (0, "sample(s)") if x.shape[0] == 0 else (0, "feature(s)")
        raise ArrayInputError(f"{method}: X has {count} {what} (shape={x.shape}) while a minimum of 1 is required.")
    if x.shape[-1] % n_views:
        raise ArrayInputError(f"{method}: X's width {x.shape[-1]} is not {n_views} views side by side")
    if not np.isfinite(x).all():
        raise ArrayInputError(f"{method}: X holds {int((~np.isfinite(x)).sum())} NaN or infinite values")
    return x


def labels_of(y, groups, n_rows: int, method: str) -> Labels:
    """Labels from ``y`` (1.0 preferred, 0.0 other) and ``groups`` (or the row order, see the module)."""
    if y is None:
        raise ArrayInputError(f"{method}: fitting on arrays needs y (1.0 for each example's preferred response, else 0.0)")
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) != n_rows:
        raise ArrayInputError(f"{method}: y has {len(y)} values for {n_rows} rows of X")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ArrayInputError(f"{method}: y must be 1.0 (preferred) or 0.0 (other), got {np.unique(y)[:5].tolist()}")
    is_best = y == 1.0
    if groups is None:
        if not is_best[0]:
            raise ArrayInputError(f"{method}: without groups, rows must start each example with its preferred "
                                  "response (as xy returns them); pass groups= (each row's example id)")
        example = np.cumsum(is_best) - 1
    else:
        example = np.asarray(groups).ravel()
        if len(example) != n_rows:
            raise ArrayInputError(f"{method}: groups has {len(example)} values for {n_rows} rows of X")
    labels = Labels(example, is_best)
    try:
        labels.pairs
    except ValueError as err:
        raise ArrayInputError(f"{method}: {err}") from None
    if not len(labels.pairs[0]):
        raise ArrayInputError(f"{method}: no example has a second response to pair with its preferred one")
    return labels


class RowArrays(FeatureSource):
    """Arrays given to an estimator, as a source: every layer a single-layer probe asks for is X itself;
    a multi-site X ``(sequences, sites, width)`` holds site s at layer s (residual) or as the heads of layer 0."""

    layer_free = True

    def __init__(self, x: np.ndarray, views: tuple[str, ...], labels: Labels | None = None):
        self.labels = labels
        self.meta = {"name": "arrays"}
        width = x.shape[-1] // len(views)
        self._views = {view: x[..., i * width:(i + 1) * width] for i, view in enumerate(views)}

    def _view(self, view: str) -> np.ndarray:
        self.require((view,))
        return self._views[view]

    def residual(self, view: str, layer: int | None) -> np.ndarray:
        x = self._view(view)
        return x[:, layer] if x.ndim == 3 else x

    def heads(self, view: str, layer: int) -> np.ndarray:
        return self._view(view)

    def loglik(self) -> np.ndarray:
        return self._view("loglik")[:, 0].astype(np.float64)

    def layers(self, view: str) -> list[int]:
        x = self._view(view)
        return list(range(x.shape[1])) if x.ndim == 3 else []

    def head_layers(self, view: str) -> list[int]:
        return [0]

    def require(self, views: tuple[str, ...], *, heads: bool = False, loglik: bool = False) -> None:
        missing = [view for view in (("loglik",) if loglik else views) if view not in self._views]
        if missing:
            raise ArrayInputError(f"these arrays hold the view(s) {','.join(self._views)}, not {','.join(missing)}")


def best_in_group(scores: np.ndarray, groups) -> np.ndarray:
    """1 for the row scored highest within its group (the first of ties), else 0."""
    groups = np.asarray(groups).ravel()
    if len(groups) != len(scores):
        raise ArrayInputError(f"groups has {len(groups)} values for {len(scores)} rows of X")
    order = np.lexsort((-scores, groups))
    first = np.ones(len(order), dtype=bool)
    first[1:] = groups[order][1:] != groups[order][:-1]
    predicted = np.zeros(len(scores), dtype=np.int64)
    predicted[order[first]] = 1
    return predicted
