"""A store as labelled arrays for notebooks: pandas for the per-sequence table, xarray for
activations. Both are optional (``pip install 'genies-toolkit[notebook]'``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Iterable

import numpy as np

from common import UserError

if TYPE_CHECKING:
    from actstore.store.activation_store import ActivationStore

NOTEBOOK_INSTALL = "pip install 'genies-toolkit[notebook]'  (or: pip install pandas xarray)"


def optional(module: str):
    """Import an optional notebook dependency, or one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this needs {module}, which is not installed: {NOTEBOOK_INSTALL}") from None


def xy_order(example: np.ndarray, is_best: np.ndarray) -> np.ndarray:
    """Rows ordered example by example (in order of first appearance), each example's preferred response first."""
    _, first_seen, inverse = np.unique(example, return_index=True, return_inverse=True)
    appearance = np.argsort(np.argsort(first_seen))[inverse]
    return np.lexsort((~np.asarray(is_best, dtype=bool), appearance))


def store_xy(store: "ActivationStore", layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, groups) for scikit-learn: the residual stream at ``layer`` one row per sequence, the response's
    score (1.0 preferred, 0.0 other) and its example id, ordered by :func:`xy_order`."""
    sequences = store.sequences()
    y = (np.asarray(sequences["score"]) == 1.0).astype(np.float64)
    order = xy_order(sequences["example"], y == 1.0)
    return store.activations(layer)[order], y[order], np.asarray(sequences["example"])[order]


def sequence_frame(store: "ActivationStore"):
    """One row per sequence: example, response, score, is_best, n_tokens, last_token, loglik
    (plain view) and the prompt and response texts."""
    pandas = optional("pandas")
    columns = store.sequences()
    columns["is_best"] = columns["score"] == 1.0
    columns.update(store.texts())
    frame = pandas.DataFrame(columns)
    frame.index.name = "sequence"
    return frame


def activation_array(store: "ActivationStore", layers: Iterable[int] | None = None):
    """Residual activations as an ``xarray.DataArray`` with dims (sequence, layer, hidden), the
    per-sequence table as coordinates, and the store's identity as attributes. Only the
    requested layers are read (each checked against its checksums)."""
    xarray = optional("xarray")
    chosen = list(store.layers if layers is None else layers)
    values = np.stack([store.activations(layer) for layer in chosen], axis=1)
    table = sequence_frame(store)
    coords = {"sequence": np.arange(store.n_sequences), "layer": chosen, "hidden": np.arange(values.shape[2])}
    coords.update({name: ("sequence", table[name].to_numpy()) for name in table.columns})
    meta = store.meta
    attrs = {key: meta[key] for key in ("model", "model_id", "dataset", "split", "view", "fingerprint", "dtype")
             if meta.get(key) is not None}
    return xarray.DataArray(values, dims=("sequence", "layer", "hidden"), coords=coords, attrs={**attrs, "url": store.url})
