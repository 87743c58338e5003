"""Arrays for a method from stores: ``X, y, groups = xy(train, "cra", layer=8)`` in the shape the
method's estimator takes (probes.arrays), rows ordered as ``ActivationStore.xy`` orders them."""

from __future__ import annotations

import numpy as np

import registry
from common import UserError
from actstore.store.notebook import xy_order
from probes.estimator import as_source


def xy(train, method: str = "mms", layer: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``train``: what a probe's ``fit`` takes (a store path or URL, an opened store, a split's view
    stores, a source). A method fitted at one layer needs ``layer``; one that chooses its own sites gets
    all of them, ``(sequences, sites, width)``: every layer (lat-stim) or every head of every layer."""
    spec = registry.get(method, registry.store_methods())
    source = as_source(train)
    source.require(spec.views, heads=spec.heads, loglik=spec.loglik)
    labels = source.labels
    if spec.loglik:
        x = source.loglik()[:, None]
    elif spec.takes_layer:
        if layer is None:
            raise UserError(f"{method} reads one layer: give layer=")
        x = np.concatenate([source.residual(view, layer) for view in spec.views], axis=-1)
    elif spec.heads:
        x = np.concatenate([np.concatenate([source.heads(view, at) for at in source.head_layers(view)], axis=1)
                            for view in spec.views], axis=-1)
    else:
        x = np.concatenate([np.stack([source.residual(view, at) for at in source.layers(view)], axis=1)
                            for view in spec.views], axis=-1)
    order = xy_order(labels.example, labels.is_best)
    return x[order].astype(np.float32), labels.is_best[order].astype(np.float64), labels.example[order]
