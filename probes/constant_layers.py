"""Layers that say nothing about a response: the same vector for every sequence (layer 0 at the last token is
the embedding of the same token, EOS or the view's fixed word, for every example). No probe can be fitted
there; sweeps leave them out, and a fit asked for at one is refused."""

from __future__ import annotations

import numpy as np

RELATIVE_TOLERANCE = 1e-5  # across-sequence spread at most this fraction of the activations' RMS: constant


def is_constant(x: np.ndarray) -> bool:
    """Whether the rows of ``x`` (sequences x features) are all the same vector, up to rounding."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return False
    spread = float(np.max(np.abs(x - x[0])))
    scale = float(np.sqrt(np.mean(x ** 2)))
    return spread <= RELATIVE_TOLERANCE * scale or spread == 0.0


def constant_layer_message(source_name: str, layer: int, view: str) -> str:
    return (f"{source_name}: layer {layer} is the same vector for every sequence ({view} view; layer 0 at the last "
            "token is the embedding of the same token): no probe can be fitted there; choose a block's output "
            "(layer 1 or more)")
