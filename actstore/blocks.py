"""One chunk-aligned block of sequences: length-sorted batches in, store-ordered arrays out."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from actstore.batching import EncodedSequence, pad_batch, plan_batches
from actstore.capture import DecoderParts, LastTokenCapture
from actstore.forward import BatchActivations, run_batch


def run_block(parts: DecoderParts, capture: LastTokenCapture, sequences: Sequence[EncodedSequence], *, pad_id: int,
              batch_tokens: int, padding_side: str, with_loglik: bool,
              on_batch: Callable[[int], None] | None = None) -> BatchActivations:
    """Activations of ``sequences`` in their given order, computed in length-sorted batches."""
    n = len(sequences)
    arrays: dict[str, np.ndarray] = {}
    for indices in plan_batches([s.n_tokens for s in sequences], batch_tokens):
        batch = pad_batch([sequences[i] for i in indices], pad_id, padding_side)
        out = run_batch(parts, capture, batch, with_loglik=with_loglik)
        for name, axis, values in _fields(out):
            if name not in arrays:
                shape = list(values.shape)
                shape[axis] = n
                arrays[name] = np.empty(shape, dtype=values.dtype)
            target = (slice(None),) * axis + (indices,)
            arrays[name][target] = values
        if on_batch:
            on_batch(len(indices))
    return BatchActivations(**arrays)


def _fields(out: BatchActivations):
    """(name, sequence axis, values) of every array the batch produced."""
    for name, axis in (("residual", 1), ("heads", 1), ("final_norm", 0), ("n_tokens", 0), ("last_token", 0), ("loglik", 0)):
        values = getattr(out, name)
        if values is not None:
            yield name, axis, values
