"""``actstore extract``: one store per (dataset, split, view), the views of a split computed together.

For every store: find it, reuse it when complete, resume it when it holds some flagged blocks
of the same extraction, refuse it when it comes from another extraction (unless
``overwrite``). Then the split's stores that need work are filled together, block by block
(bounded memory): with prompt reuse each prompt runs once for all of those views (and only for
the blocks some view still misses); each store's block is written and flagged on its own, and
each store is marked complete at the end. The model is loaded only when some store needs work,
so re-running a finished command costs no model load.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Literal

from common import UserError, default_store_root, parse_list
from common.settings import available_cpus, check_choices, setting
from distributions.data import DATA_DIR_HELP, load_split, resolve_data_dir, split_path
from distributions.split_file import Split
from actstore.engine.batching import PADDING_SIDES
from actstore.engine.fill import PendingStore, StoreResult, Timings, fill, finished
from actstore.engine.preflight import check_context
from actstore.engine.sequence_table import SequenceTable, sequence_table
from actstore.engine.store_identity import (matches_before_loading, same_extraction, store_attributes,
                                            store_identity, store_layout)
from actstore.engine.threads import THREADS_HELP, compute_threads
from actstore.engine.views import PromptFormat, View, parse_views
from actstore.models import LoadedModel, ModelOnDemand, ModelSpec, check_family
from actstore.models.compute_dtype import COMPUTE_DTYPE_HELP, ComputeDtype
from actstore.models.placement import QuantizedPlacement
from actstore.models.quantization import check_quantization
from actstore.store import (DISK_FULL, ActivationStore, create_store, disk_full_message, find_store, open_for_writing,
                            open_store)
from actstore.store.growth import covers, grow
from actstore.store.layers import parse_layers
from actstore.store.locations import store_url
from actstore.store.lock import ExtractionLock
from actstore.store.migration import adopt_legacy
from actstore.store.roots import checked_store_root
from actstore.store.sharding import Shard, wait_for_creation

__all__ = ["ExtractConfig", "PendingStore", "StoreResult", "Timings", "concrete_compute_dtype", "extract",
           "extract_split"]

Site = Literal["residual", "heads"]


StorageDtype = Literal["float16", "float32"]


@dataclass(frozen=True, kw_only=True)
class ExtractConfig(QuantizedPlacement):
    """`actstore extract`: each documented field is one of its options."""

    model: str = setting(help="smollm2-135m, tiny-random, a local directory or .gguf file, or a cached hub id.")
    datasets: tuple[str, ...] = setting(help="NAME[,NAME...] of distributions under the data directory.",
                                        option="--dataset", parse=parse_list)
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    splits: tuple[str, ...] = setting(("train", "test"), "train, test or both.", option="--split", parse=parse_list)
    views: tuple[str, ...] = setting(("plain",), "plain, stim, yes, no (comma-separated).", parse=parse_list)
    layers: str = setting("all", "all, a list 0,10,20, or inclusive ranges 10:20 (0 = embeddings, l = output of "
                                 "block l-1).")
    limit: int | None = setting(None, "Only the first N examples of each split. A store holding fewer grows to N "
                                      "(only the missing examples are computed); one holding more stays as it is.")
    dtype: StorageDtype = setting("float16", "Storage dtype (see --compute-dtype for the model's).")
    compute_dtype: ComputeDtype = setting("auto", COMPUTE_DTYPE_HELP)
    prompt_reuse: bool = setting(
        True, "Run every token prefix shared by a block's sequences (an example's prompt, a response shared by "
              "views) once: each prompt group one row whose mask lets a token see its own path. On by default on "
              "every device and placement; --no-prompt-reuse runs every sequence whole.")
    site: Site = setting("residual", "heads: also keep per-head attention outputs (input of o_proj).")
    prompt_format: PromptFormat = setting("raw", "chat: the prompt as a user turn in the tokenizer's chat template "
                                                 "(instruct/chat models).")
    out: str | None = setting(None, "Store root: a directory or fsspec URL (default: the per-user store directory).")
    batch_tokens: int | None = setting(None, "Padded tokens per forward pass (default: 4096 on a CPU; on a GPU "
                                             "a budget scaled to its free memory once the model is loaded).")
    block_size: int = setting(512, "Sequences per chunk-aligned block: the unit of writing and of resuming.")
    device: str | None = setting(None, "cpu, cuda, cuda:1 ... (default: cuda when available).")
    skip_bad: bool = setting(False, "--skip-bad: leave invalid examples out (counted in the store's attributes "
                                    "n_skipped_examples / skipped_examples); --strict: stop at the first invalid "
                                    "example. Sequences longer than the model's context are always refused.",
                             option="--skip-bad/--strict")
    overwrite: bool = setting(False, "Replace an existing store that holds a different extraction.")
    repair: bool = setting(False, "Check every block of existing stores against its checksums and recompute the "
                                  "damaged ones.")
    progress: bool = setting(True, "Show a progress bar (--no-progress: none).")
    threads: int | None = setting(None, THREADS_HELP, at_least=1, at_most=available_cpus)
    padding_side: str = "right"
    compressor: str | None = "blosc-zstd"

    def __post_init__(self):
        check_choices(self)
        for name in ("batch_tokens", "block_size", "limit", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.padding_side not in PADDING_SIDES:
            raise UserError(f"unknown padding side {self.padding_side!r} (choose {' or '.join(PADDING_SIDES)})")
        if not self.datasets:
            raise UserError("no dataset named (--dataset NAME[,NAME...])")
        parse_views(",".join(self.views))  # unknown views fail before any work
        self.model_spec()  # so do unknown placements and quantizations

    def model_spec(self) -> ModelSpec:
        return ModelSpec.requested(self.model, compute_dtype=self.compute_dtype, device=self.device,
                                   device_map=self.device_map, max_memory=self.max_memory,
                                   offload_dir=self.offload_dir, quantization=self.quantize,
                                   attention=self.attention, tree_masks=self.prompt_reuse)

    @property
    def root(self) -> str:
        return str(self.out) if self.out else str(default_store_root())


def extract(config: ExtractConfig, *, loaded: LoadedModel | None = None, on_result=None,
            on_start=None, shard: Shard | None = None) -> list[StoreResult]:
    """Extract every (dataset, split, view) of ``config``; ``on_result`` sees each store as it finishes,
    ``on_start`` the resolved config (compute dtype, prompt reuse) once, when the first store needs work.
    ``shard``: this process's blocks (default: from RANK / WORLD_SIZE, ``Shard.from_environment``)."""
    config = replace(config, out=checked_store_root(config.out, "--out", writing=True))
    data_dir = resolve_data_dir(config.data_dir)
    views = list(dict.fromkeys(parse_views(",".join(config.views), config.prompt_format)))  # a view named twice is one store
    for dataset in config.datasets:  # unknown datasets and splits fail before the long work starts
        for split in config.splits:
            split_path(data_dir, dataset, split)
    spec = config.model_spec()
    if loaded is None:
        check_quantization(spec.quantization, spec.main_device)
        check_family(spec.name)
    config = replace(config, compute_dtype=concrete_compute_dtype(config, loaded),
                     quantize=_quantization(config, loaded))
    model = ModelOnDemand(replace(spec, compute_dtype=config.compute_dtype), loaded)
    announced = []

    def starting() -> None:
        if on_start and not announced:
            announced.append(True)
            on_start(config)

    results = []
    with compute_threads(config.threads):
        for dataset in config.datasets:
            for split_name in config.splits:
                split = load_split(data_dir, dataset, split_name, skip_bad=config.skip_bad)
                table = sequence_table(split, config.limit)
                for result in extract_split(config, model, split, table, views, starting, shard=shard):
                    results.append(result)
                    if on_result:
                        on_result(result)
    return results


def _quantization(config: ExtractConfig, loaded: LoadedModel | None) -> str:
    """A model passed in was loaded with its own quantization, which the store records."""
    if loaded is None:
        return config.quantize
    own = loaded.spec.quantization if loaded.spec is not None else "none"
    if config.quantize not in ("none", own):
        raise UserError(f"the model passed in is quantized {own}, not the requested --quantize {config.quantize}")
    return own


def concrete_compute_dtype(config: ExtractConfig, loaded: LoadedModel | None) -> str:
    """``auto`` resolved for the device; a model passed in already computes in its own dtype."""
    if loaded is None:
        return config.model_spec().compute_dtype
    own = loaded.compute_dtype
    if config.compute_dtype not in ("auto", own):
        raise UserError(f"the model passed in computes in {own}, not the requested --compute-dtype {config.compute_dtype}")
    return own


def extract_split(config: ExtractConfig, model: ModelOnDemand, split: Split, table: SequenceTable,
                  views: list[View], starting=lambda: None, *, shard: Shard | None = None) -> list[StoreResult]:
    """The stores of ``views`` for one split, in that order; those that need work are filled together."""
    try:
        return _extract_split(config, model, split, table, views, starting, shard or Shard.from_environment())
    except OSError as err:
        if err.errno in DISK_FULL:
            where = store_url(config.root, config.model, split.dataset, split.split, views[0].name, site=config.site, prompt_format=views[0].prompt_format)
            raise UserError(disk_full_message(where)) from None
        raise


def _extract_split(config: ExtractConfig, model: ModelOnDemand, split: Split, table: SequenceTable,
                   views: list[View], starting, shard: Shard) -> list[StoreResult]:
    with ExitStack() as locks:
        prepared = []
        for view in views:
            url = store_url(config.root, config.model, split.dataset, split.split, view.name, site=config.site,
                            prompt_format=view.prompt_format)
            lock = locks.enter_context(ExtractionLock(url, shard))
            prepared.append(_prepare(url, shard, lock, config, model, split, table, view))
        pending = [p for p in prepared if isinstance(p, PendingStore)]
        if pending:
            starting()
        # Stores resumed from a run with another --block-size have other blocks: those fill apart.
        by_blocks: dict[int, list[PendingStore]] = {}
        for target in pending:
            by_blocks.setdefault(target.store.layout.block_size, []).append(target)
        filled = {}
        for targets in by_blocks.values():
            for target, result in zip(targets, fill(targets, config, model.get(), split, table, shard=shard)):
                filled[target.view.name] = result
        results = [filled[p.view.name] if isinstance(p, PendingStore) else p for p in prepared]
    if config.repair:  # a store other processes still fill is checked by the one that completes it
        for result in results:
            if result.status != "partial":
                check_repaired(result.url)
    return results


def _prepare(url: str, shard: Shard, lock: ExtractionLock, config: ExtractConfig, model: ModelOnDemand,
             split: Split, table: SequenceTable, view: View) -> StoreResult | PendingStore:
    if shard.creates:
        moved = adopt_legacy(url)
        if moved is not None:
            print(f"moved {moved} (named by an earlier version with its --limit) to {url}", file=sys.stderr)
    existing = _existing_store(url, config.overwrite)
    repaired = False
    if existing is not None and existing.meta.get("complete") and not model.is_loaded and covers(existing.meta, config.limit):
        if matches_before_loading(existing, config, split, view):
            if config.repair:
                repaired = True
                if not _repair(url, table):
                    return finished(existing, url, split, view)
                existing = find_store(url)
            else:
                return finished(existing, url, split, view)
    loaded = model.get()
    n_blocks = loaded.model.config.num_hidden_layers
    layers = parse_layers(config.layers, n_blocks, model=config.model)
    identity = store_identity(config, split, view, loaded.model_id, layers)
    check_context(table, loaded.tokenizer, view, max_tokens=getattr(loaded.model.config, "max_position_embeddings", None),
                  source=str(split.path))
    if not shard.creates:  # rank 0 creates (re-creates, grows) the store; the others use it once it is this extraction
        existing = wait_for_creation(url, lambda: _created_for(url, identity, config), rank=shard.rank,
                                     main_gone=lock.main_rank_gone, creator=shard.first)
    if existing is not None and existing.meta.get("creating"):
        existing = None  # a creation that was killed: start again
    if existing is not None and not same_extraction(existing, identity, overwrite=config.overwrite):
        existing = None  # --overwrite: replaced below
    if existing is not None:
        if config.repair and not repaired and shard.creates:
            repaired = _repair(url, table)
            existing = find_store(url)
        if not covers(existing.meta, config.limit):  # (the other ranks waited for this)
            grow(existing, table.labels(), config.limit)
            return PendingStore(open_for_writing(url), "grown", view)
        if existing.meta.get("complete"):
            return finished(existing, url, split, view)
        return PendingStore(open_for_writing(url), "repaired" if repaired else "resumed", view)
    layout = store_layout(config, loaded, layers, view, len(table))
    return PendingStore(create_store(url, layout, table.labels(), store_attributes(config, loaded, split, view, identity)),
                        "created", view)


def _repair(url: str, table: SequenceTable) -> bool:
    """Unflag the damaged blocks of the store at ``url`` (same extraction); True when it now needs work."""
    store = open_for_writing(url)
    damage = store.repair(table.labels())
    for found in damage:
        print(f"repair: {url}: {found}", file=sys.stderr)
    return not store.meta.get("complete")


def check_repaired(url: str) -> None:
    """After ``--repair``: the store verifies, or a UserError names what could not be repaired."""
    damage = open_store(url).verify()
    if damage:
        more = f" (and {len(damage) - 1} more damaged blocks)" if len(damage) > 1 else ""
        raise UserError(f"{url}: --repair could not repair {damage[0]}{more}; re-extract it with the same command "
                        "and --overwrite")


def _created_for(url: str, identity: dict, config: ExtractConfig) -> ActivationStore | None:
    """The store at ``url`` once it holds this extraction of enough examples (a different one is refused
    without --overwrite)."""
    try:
        store = find_store(url)
    except UserError:  # caught between rank 0 emptying the directory and writing the group
        return None
    if store is None or store.meta.get("creating") or not covers(store.meta, config.limit):
        return None
    return store if same_extraction(store, identity, overwrite=config.overwrite) else None


def _existing_store(url: str, overwrite: bool) -> ActivationStore | None:
    try:
        return find_store(url)
    except UserError:
        if overwrite:  # something that is not a store: --overwrite replaces it
            return None
        raise
