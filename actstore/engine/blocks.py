"""One chunk-aligned block of sequences: length-sorted batches in, store-ordered arrays out."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from actstore.engine.batching import pad_batch, plan_batches
from actstore.engine.capture import DecoderParts
from actstore.engine.forward import BatchActivations, run_batch
from actstore.engine.prompt_reuse import Responses, group_by_prompt, run_tree
from actstore.engine.stage_clock import StageClock


def run_block(parts: DecoderParts, views: Sequence[Responses], *, pad_id: int, batch_tokens: int, padding_side: str,
              on_batch: Callable[[int], None] | None = None, prompt_reuse: bool = False,
              shared_clock: StageClock | None = None) -> dict[str, BatchActivations]:
    """Activations of each view's sequences (the same examples, one view each), in their given order,
    computed in length-sorted batches.

    With ``prompt_reuse``, every token prefix shared by sequences of one prompt (in any of the
    views with the same prompts: ``stim`` has its own) runs once (see ``actstore.engine.prompt_reuse``),
    when the block has any prompt shared by two sequences.
    """
    assembled = {view.key: BlockAssembler(len(view.sequences)) for view in views}
    clocks = {view.key: view.clock for view in views}
    alone = list(views)
    if prompt_reuse:
        for same_prompts in _by_prompts(views):
            groups = group_by_prompt(same_prompts[0].sequences)
            if len(groups) < len(same_prompts[0].sequences) or len(same_prompts) > 1:
                for key, indices, out in run_tree(parts, groups, same_prompts, pad_id=pad_id, batch_tokens=batch_tokens,
                                                  padding_side=padding_side, clock=shared_clock or StageClock()):
                    _add(assembled[key], indices, out, on_batch, clocks[key])
                alone = [view for view in alone if view.key not in {v.key for v in same_prompts}]
    for view in alone:
        with view.capture:
            for indices in plan_batches([s.n_tokens for s in view.sequences], batch_tokens):
                batch = pad_batch([view.sequences[i] for i in indices], pad_id, padding_side)
                out = run_batch(parts, view.capture, batch, with_loglik=view.with_loglik, clock=view.clock)
                _add(assembled[view.key], indices, out, on_batch, view.clock)
    return {key: block.result() for key, block in assembled.items()}


def _by_prompts(views: Sequence[Responses]) -> list[list[Responses]]:
    """The views in groups whose sequences have the same prompts, in order."""
    groups: dict[tuple, list[Responses]] = {}
    for view in views:
        groups.setdefault(tuple(s.prompt_ids for s in view.sequences), []).append(view)
    return list(groups.values())


def _add(block: "BlockAssembler", indices: Sequence[int], out: BatchActivations, on_batch, clock: StageClock) -> None:
    with clock.stage("gather"):
        block.add(indices, out)
    if on_batch:
        on_batch(len(indices))


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
