"""One chunk-aligned block of sequences: length-sorted batches in, store-ordered arrays out."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from actstore.batching import EncodedSequence, pad_batch, plan_batches
from actstore.capture import DecoderParts, LastTokenCapture
from actstore.forward import BatchActivations, run_batch
from actstore.stage_clock import StageClock


def run_block(parts: DecoderParts, capture: LastTokenCapture, sequences: Sequence[EncodedSequence], *, pad_id: int,
              batch_tokens: int, padding_side: str, with_loglik: bool,
              on_batch: Callable[[int], None] | None = None, prompt_reuse: bool = False,
              clock: StageClock | None = None) -> BatchActivations:
    """Activations of ``sequences`` in their given order, computed in length-sorted batches.

    With ``prompt_reuse``, consecutive sequences with the same prompt run it once (see
    ``actstore.prompt_reuse``), when the block has any prompt shared by two of them.
    """
    from actstore.prompt_reuse import group_by_prompt, run_groups

    clock = clock or StageClock()
    assembled = BlockAssembler(len(sequences))
    if prompt_reuse:
        groups = group_by_prompt(sequences)
        if len(groups) < len(sequences):
            for indices, out in run_groups(parts, capture, sequences, groups, pad_id=pad_id, batch_tokens=batch_tokens,
                                           padding_side=padding_side, with_loglik=with_loglik, clock=clock):
                with clock.stage("gather"):
                    assembled.add(indices, out)
                if on_batch:
                    on_batch(len(indices))
            return assembled.result()
    for indices in plan_batches([s.n_tokens for s in sequences], batch_tokens):
        batch = pad_batch([sequences[i] for i in indices], pad_id, padding_side)
        out = run_batch(parts, capture, batch, with_loglik=with_loglik, clock=clock)
        with clock.stage("gather"):
            assembled.add(indices, out)
        if on_batch:
            on_batch(len(indices))
    return assembled.result()


class BlockAssembler:
    """Puts the rows of each batch back at their places in the block."""

    def __init__(self, n: int):
        self.n = n
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, indices: Sequence[int], out: BatchActivations) -> None:
        for name, axis, values in _fields(out):
            if name not in self.arrays:
                shape = list(values.shape)
                shape[axis] = self.n
                self.arrays[name] = np.empty(shape, dtype=values.dtype)
            target = (slice(None),) * axis + (list(indices),)
            self.arrays[name][target] = values

    def result(self) -> BatchActivations:
        return BatchActivations(**self.arrays)


def _fields(out: BatchActivations):
    """(name, sequence axis, values) of every array the batch produced."""
    for name, axis in (("residual", 1), ("heads", 1), ("final_norm", 0), ("n_tokens", 0), ("last_token", 0), ("loglik", 0)):
        values = getattr(out, name)
        if values is not None:
            yield name, axis, values
