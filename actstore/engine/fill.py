"""Filling stores block by block: each block's prompts computed once for every view that misses it,
each store's block written and flagged on its own, each store marked complete at the end."""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from distributions.split_file import Split
from actstore.engine.batch_budget import batch_budget
from actstore.engine.sequence_table import SequenceTable, encode_rows
from actstore.engine.stage_clock import clock_for
from actstore.engine.views import View
from actstore.models import LoadedModel
from actstore.store import ActivationStore, StoreLayout
from actstore.store.growth import KEPT_ROWS, forget_kept_rows, kept_rows
from actstore.store.sharding import Shard
from actstore.store.writer import BackgroundWriter

if TYPE_CHECKING:
    from actstore.engine.extraction import ExtractConfig


@dataclass(frozen=True)
class Timings:
    tokenize_s: float = 0.0
    forward_s: float = 0.0
    gather_s: float = 0.0  # log-likelihood head, copies to the host, placing rows in the block
    write_s: float = 0.0  # time the model waited for the writer
    write_background_s: float = 0.0  # time the writer thread spent compressing and writing


@dataclass(frozen=True)
class StoreResult:
    url: str
    dataset: str
    split: str
    view: str
    status: str  # "complete" (found finished, nothing done), "created", "resumed", "repaired", "grown" or "partial"
    n_sequences: int
    blocks_computed: int
    blocks_total: int
    sequences_computed: int
    seconds: float
    timings: Timings = field(default_factory=Timings)

    @property
    def sequences_per_second(self) -> float | None:
        return self.sequences_computed / self.seconds if self.sequences_computed and self.seconds else None


@dataclass(frozen=True)
class PendingStore:
    """A store of this extraction that still misses blocks."""

    store: ActivationStore
    status: str  # "created", "resumed", "repaired" or "grown"
    view: View


def fill(pending: list[PendingStore], config: ExtractConfig, loaded: LoadedModel, split: Split, table: SequenceTable,
          *, shard: Shard = Shard()) -> list[StoreResult]:
    """Compute, write and flag every block of this shard that some store still misses (each block's
    prompts once for all the views that miss it); mark each store complete once every block (of all
    shards) is flagged, else report it ``partial``."""
    import torch
    from tqdm import tqdm

    from actstore.engine.blocks import run_block
    from actstore.engine.capture import DecoderParts, LastTokenCapture
    from actstore.engine.prompt_reuse import Responses

    parts = DecoderParts.of(loaded.model)
    device = loaded.input_device
    max_tokens = getattr(loaded.model.config, "max_position_embeddings", None)
    budget = batch_budget(config.batch_tokens, loaded.model, device)
    layout = pending[0].store.layout  # the same sequences and blocks in every store given
    todo, already, kept = {}, 0, {}
    used_kept: dict[str, set[int]] = {t.view.name: set() for t in pending}
    for target in pending:
        done = target.store.blocks_done()
        name = target.view.name
        todo[name] = {b for b in range(layout.n_blocks) if not done[b] and shard.owns(b)}
        already += sum(layout.block_length(b) for b in range(layout.n_blocks) if done[b])
        kept[name] = {b: rows for b in todo[name] if (rows := kept_rows(target.store, b)) is not None}
        already += sum(len(rows["n_tokens"]) for rows in kept[name].values())
    captures = {t.view.name: LastTokenCapture(parts, _capture_plan(t.store.layout, parts.n_blocks),
                                              t.store.layout.n_heads) for t in pending}
    clocks = {t.view.name: clock_for(device) for t in pending}
    shared_clock = clock_for(device)
    shared = {name: {"forward": 0.0, "gather": 0.0} for name in clocks}  # each view's share of the shared passes
    started = time.perf_counter()
    names = ",".join(t.view.name for t in pending)
    bar = tqdm(total=layout.n_sequences * len(pending), initial=already, unit="seq",
               desc=f"{split.dataset}/{split.split}.{names}", disable=not config.progress, file=sys.stderr,
               dynamic_ncols=True)
    with bar, torch.inference_mode(), ExitStack() as writers:
        writer = {t.view.name: writers.enter_context(BackgroundWriter(t.store.write_block)) for t in pending}
        for block in sorted(set().union(*todo.values())):
            start, stop = layout.block_range(block)
            needing = [t for t in pending if block in todo[t.view.name]]
            # a grown store's last block of before keeps its rows: only the new ones are computed (views apart)
            firsts = {start + len(kept[t.view.name][block]["n_tokens"]) if block in kept[t.view.name] else start
                      for t in needing}
            first = firsts.pop() if len(firsts) == 1 else start
            views = []
            for target in needing:
                name = target.view.name
                with clocks[name].stage("tokenize"):
                    sequences = encode_rows(table, first, stop, loaded.tokenizer, target.view, max_tokens=max_tokens,
                                            source=str(split.path))
                views.append(Responses(name, sequences, captures[name], target.store.layout.with_loglik, clocks[name]))
            before = dict(shared_clock.seconds)
            outs = run_block(parts, views, pad_id=loaded.tokenizer.pad_token_id, batch_tokens=budget,
                             padding_side=config.padding_side, on_batch=bar.update, prompt_reuse=config.prompt_reuse,
                             shared_clock=shared_clock)
            for target in needing:
                name = target.view.name
                for stage in shared[name]:
                    shared[name][stage] += (shared_clock.seconds[stage] - before[stage]) / len(needing)
                computed = {f.name: getattr(outs[name], f.name) for f in fields(outs[name])}
                if first > start:
                    computed = with_kept_rows(kept[name][block], computed)
                    used_kept[name].add(block)
                elif block in kept[name]:
                    bar.update(-len(kept[name][block]["n_tokens"]))  # counted as kept, computed after all
                with clocks[name].stage("write"):  # only the wait for the previous block's write
                    writer[name].submit(block, computed)
        for target in pending:
            with clocks[target.view.name].stage("write"):
                writer[target.view.name].wait()
            grown_from = target.store.meta.get(KEPT_ROWS)
            if grown_from and grown_from["block"] in todo[target.view.name]:
                forget_kept_rows(target.store)  # that block is whole again
    wall = time.perf_counter() - started
    results = []
    for target in pending:
        name = target.view.name
        timings = {**clocks[name].totals(), "write_background_s": writer[name].busy_s}
        for stage, seconds in shared[name].items():
            timings[f"{stage}_s"] += seconds
        # The views ran interleaved: each is charged its own stages and its share of the shared passes.
        seconds = sum(v for k, v in timings.items() if k != "write_background_s") if len(pending) > 1 else wall
        kept_used = sum(len(rows["n_tokens"]) for block, rows in kept[name].items() if block in used_kept[name])
        results.append(_complete(target, todo[name], seconds, Timings(**timings), split, len(pending) > 1 and names,
                                 budget, kept_used))
    return results


def _capture_plan(layout: StoreLayout, n_blocks: int):
    from actstore.engine.capture import CapturePlan

    return CapturePlan.for_request(layout.layers, n_blocks, heads=bool(layout.n_heads), full_depth=layout.with_final_norm)


def with_kept_rows(kept: dict[str, np.ndarray], computed: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
    """A block's kept rows, then its computed ones (residual and heads run along their second axis)."""
    return {name: values if values is None or name not in kept else
            np.concatenate([kept[name], values], axis=1 if name in ("residual", "heads") else 0)
            for name, values in computed.items()}


def _complete(target: PendingStore, todo: set[int], seconds: float, timings: Timings, split: Split,
              together: str | bool, batch_tokens: int, kept: int = 0) -> StoreResult:
    store, layout, view = target.store, target.store.layout, target.view
    computed = sum(layout.block_length(b) for b in todo) - kept
    if not store.blocks_done().all():  # other processes still write their blocks; the last one marks it
        return StoreResult(store.url, split.dataset, split.split, view.name, "partial", layout.n_sequences, len(todo),
                           layout.n_blocks, computed, seconds, timings)
    extra = {"views_together": together} if together else {}
    store.mark_complete(run_status=target.status, blocks_computed=len(todo), sequences_computed=computed,
                        batch_tokens=batch_tokens,
                        seconds=round(seconds, 3), sequences_per_second=round(computed / seconds, 3) if seconds else None,
                        timings={k: round(v, 3) for k, v in asdict(timings).items()}, **extra)
    return StoreResult(store.url, split.dataset, split.split, view.name, target.status, layout.n_sequences, len(todo),
                       layout.n_blocks, computed, seconds, timings)


def finished(store: ActivationStore, url: str, split: Split, view: View) -> StoreResult:
    layout = store.layout
    return StoreResult(url, split.dataset, split.split, view.name, "complete", layout.n_sequences, 0, layout.n_blocks, 0, 0.0)
