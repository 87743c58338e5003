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
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal

import torch

from actstore.batching import PADDING_SIDES
from common import UserError, default_store_root, parse_list
from actstore.compute_dtype import COMPUTE_DTYPE_HELP, ComputeDtype
from actstore.layers import needs_full_depth, parse_layers
from actstore.locations import store_url
from actstore.lock import ExtractionLock
from actstore.models import LoadedModel, ModelOnDemand, ModelSpec, check_family, model_fingerprint
from actstore.placement import QuantizedPlacement
from actstore.prompt_reuse import reuses_prompts
from actstore.roots import checked_store_root
from common.settings import check_choices, setting
from actstore.preflight import check_context
from actstore.sequence_table import SequenceTable, encode_rows, sequence_table
from distributions.split_file import Split
from actstore.software import software_versions
from actstore.stage_clock import clock_for
from actstore.threads import THREADS_HELP, compute_threads
from actstore.writer import BackgroundWriter
from actstore.quantization import check_quantization
from actstore.sharding import Shard, wait_for_creation
from actstore.store import (DISK_FULL, ActivationStore, StoreLayout, create_store, disk_full_message, find_store,
                            open_for_writing)
from actstore.views import PromptFormat, View, parse_views
from distributions.data import DATA_DIR_HELP, load_split, resolve_data_dir, split_path

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
    limit: int | None = setting(None, "Only the first N examples of each split.")
    dtype: StorageDtype = setting("float16", "Storage dtype (see --compute-dtype for the model's).")
    compute_dtype: ComputeDtype = setting("auto", COMPUTE_DTYPE_HELP)
    prompt_reuse: bool | None = setting(
        None, "Run every token prefix shared by a block's sequences (an example's prompt, a response shared by "
              "views) once: each prompt group one row whose mask lets a token see its own path (default: on for "
              "CPUs, where it was measured faster; off for GPUs, where it was not measured since).")
    site: Site = setting("residual", "heads: also keep per-head attention outputs (input of o_proj).")
    prompt_format: PromptFormat = setting("raw", "chat: the prompt as a user turn in the tokenizer's chat template "
                                                 "(instruct/chat models).")
    out: str | None = setting(None, "Store root: a directory or fsspec URL (default: the per-user store directory).")
    batch_tokens: int = setting(4096, "Padded tokens per forward pass.")
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
    threads: int | None = setting(None, THREADS_HELP)
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
                                   attention=self.attention)

    @property
    def root(self) -> str:
        return str(self.out) if self.out else str(default_store_root())


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
    status: str  # "complete" (found finished, nothing done), "created" or "resumed"
    n_sequences: int
    blocks_computed: int
    blocks_total: int
    sequences_computed: int
    seconds: float
    timings: Timings = field(default_factory=Timings)

    @property
    def sequences_per_second(self) -> float | None:
        return self.sequences_computed / self.seconds if self.sequences_computed and self.seconds else None


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
    if config.prompt_reuse and spec.placed and spec.main_device != "cpu" and torch.cuda.device_count() > 1:
        raise UserError("--prompt-reuse runs a model on one device; a placement over several GPUs runs without it")
    config = replace(config, compute_dtype=concrete_compute_dtype(config, loaded),
                     quantize=_quantization(config, loaded),
                     prompt_reuse=reuses_prompts(config.prompt_reuse, _device(spec, loaded)))
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


def _device(spec: ModelSpec, loaded: LoadedModel | None) -> str:
    return str(loaded.input_device) if loaded is not None else spec.main_device


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


@dataclass(frozen=True)
class PendingStore:
    """A store of this extraction that still misses blocks."""

    store: ActivationStore
    status: str  # "created" or "resumed"
    view: View


def extract_split(config: ExtractConfig, model: ModelOnDemand, split: Split, table: SequenceTable,
                  views: list[View], starting=lambda: None, *, shard: Shard | None = None) -> list[StoreResult]:
    """The stores of ``views`` for one split, in that order; those that need work are filled together."""
    try:
        return _extract_split(config, model, split, table, views, starting, shard or Shard.from_environment())
    except OSError as err:
        if err.errno in DISK_FULL:
            where = store_url(config.root, config.model, split.dataset, split.split, views[0].name, limit=config.limit,
                              site=config.site, prompt_format=views[0].prompt_format)
            raise UserError(disk_full_message(where)) from None
        raise


def _extract_split(config: ExtractConfig, model: ModelOnDemand, split: Split, table: SequenceTable,
                   views: list[View], starting, shard: Shard) -> list[StoreResult]:
    with ExitStack() as locks:
        prepared = []
        for view in views:
            url = store_url(config.root, config.model, split.dataset, split.split, view.name, limit=config.limit,
                            site=config.site, prompt_format=view.prompt_format)
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
            for target, result in zip(targets, _fill(targets, config, model.get(), split, table, shard=shard)):
                filled[target.view.name] = result
        return [filled[p.view.name] if isinstance(p, PendingStore) else p for p in prepared]


def _prepare(url: str, shard: Shard, lock: ExtractionLock, config: ExtractConfig, model: ModelOnDemand,
             split: Split, table: SequenceTable, view: View) -> StoreResult | PendingStore:
    existing = _existing_store(url, config.overwrite)
    repaired = False
    if existing is not None and existing.meta.get("complete") and not model.is_loaded:
        if _matches_before_loading(existing, config, split, view):
            if config.repair:
                repaired = True
                if not _repair(url, table):
                    return _finished(existing, url, split, view)
                existing = find_store(url)
            else:
                return _finished(existing, url, split, view)
    loaded = model.get()
    n_blocks = loaded.model.config.num_hidden_layers
    layers = parse_layers(config.layers, n_blocks, model=config.model)
    identity = store_identity(config, split, view, loaded.model_id, layers)
    check_context(table, loaded.tokenizer, view, max_tokens=getattr(loaded.model.config, "max_position_embeddings", None),
                  source=str(split.path))
    if not shard.creates:  # rank 0 creates (or re-creates) the store; the others use it once it is this extraction
        existing = wait_for_creation(url, lambda: _created_for(url, identity, config.overwrite), rank=shard.rank,
                                     main_gone=lock.main_rank_gone, creator=shard.first)
    if existing is not None and existing.meta.get("creating"):
        existing = None  # a creation that was killed: start again
    if existing is not None and not _same_extraction(existing, identity, overwrite=config.overwrite):
        existing = None  # --overwrite: replaced below
    if existing is not None:
        if config.repair and not repaired and shard.creates:
            _repair(url, table)
            existing = find_store(url)
        if existing.meta.get("complete"):
            return _finished(existing, url, split, view)
        return PendingStore(open_for_writing(url), "resumed", view)
    layout = _layout(config, loaded, layers, view, len(table))
    return PendingStore(create_store(url, layout, table.labels(), _attributes(config, loaded, split, view, identity)),
                        "created", view)


def _repair(url: str, table: SequenceTable) -> bool:
    """Unflag the damaged blocks of the store at ``url`` (same extraction); True when it now needs work."""
    store = open_for_writing(url)
    damage = store.repair(table.labels())
    for found in damage:
        print(f"repair: {url}: {found}", file=sys.stderr)
    return not store.meta.get("complete")


def _created_for(url: str, identity: dict, overwrite: bool) -> ActivationStore | None:
    """The store at ``url`` once it holds this extraction (a different one is refused without --overwrite)."""
    try:
        store = find_store(url)
    except UserError:  # caught between rank 0 emptying the directory and writing the group
        return None
    if store is None or store.meta.get("creating"):
        return None
    return store if _same_extraction(store, identity, overwrite=overwrite) else None


def store_identity(config: ExtractConfig, split: Split, view: View, model_id: str, layers: tuple[int, ...]) -> dict:
    """What makes two extractions the same: a store is reused or resumed only when this matches.
    Quantized weights compute other activations; ``none`` is left out, so that stores made before
    quantization existed keep matching unquantized requests. A local model adds its content's
    fingerprint (``models.model_fingerprint``): the path alone does not say which weights it holds."""
    quantization = {} if config.quantize == "none" else {"quantization": config.quantize}
    fingerprint = model_fingerprint(config.model)
    return {
        **({"model_fingerprint": fingerprint} if fingerprint else {}),
        "model": config.model,
        "model_id": model_id,
        "dataset": split.dataset,
        "split": split.split,
        "fingerprint": split.fingerprint,
        "view": view.name,
        "view_template": view.continuation,
        "view_appends_eos": view.append_eos,
        "prompt_format": view.prompt_format,
        "layers": list(layers),
        "dtype": config.dtype,
        "compute_dtype": config.compute_dtype,
        "site": config.site,
        "limit": config.limit,
        "skip_bad": config.skip_bad,
        **quantization,
    }


def recorded_identity(store: ActivationStore) -> dict:
    """The identity a store was extracted with; stores made before prompt formats existed are raw."""
    return {"prompt_format": "raw", **(store.meta.get("identity") or {})}


def _matches_before_loading(store: ActivationStore, config: ExtractConfig, split: Split, view: View) -> bool:
    """A complete store is reused without loading the model when everything but the model id
    matches and it was made from the same model name (layers resolved with its recorded depth)."""
    recorded = recorded_identity(store)
    try:
        layers = parse_layers(config.layers, int(store.meta["model_n_blocks"]), model=config.model)
    except (UserError, KeyError, TypeError, ValueError):
        return False
    wanted = store_identity(config, split, view, recorded.get("model_id"), layers)
    return recorded == wanted


def _existing_store(url: str, overwrite: bool) -> ActivationStore | None:
    try:
        return find_store(url)
    except UserError:
        if overwrite:  # something that is not a store: --overwrite replaces it
            return None
        raise


def _same_extraction(store: ActivationStore, identity: dict, *, overwrite: bool) -> bool:
    """True when ``store`` holds this extraction; a different one is refused unless ``overwrite``."""
    recorded = recorded_identity(store)
    differing = [key for key in {**recorded, **identity} if recorded.get(key) != identity.get(key)]
    if not differing:
        return True
    if overwrite:
        return False
    what = "; ".join(f"{key}: stored {_short(recorded.get(key))}, requested {_short(identity.get(key))}"
                     for key in differing)
    if "fingerprint" in differing:
        what += f"; the data file {store.meta.get('data_file', '')} changed since this store was extracted"
    raise UserError(f"{store.url}: holds a different extraction ({what}); pass --overwrite to replace it, "
                    "or --out for another store root")


def _layout(config: ExtractConfig, loaded: LoadedModel, layers: tuple[int, ...], view: View, n: int) -> StoreLayout:
    model_config = loaded.model.config
    n_heads = model_config.num_attention_heads if config.site == "heads" else None
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads
    with_loglik = view.name == "plain"
    return StoreLayout(
        n_sequences=n, layers=layers, hidden_size=model_config.hidden_size, dtype=config.dtype,
        block_size=config.block_size, n_heads=n_heads, head_dim=head_dim if n_heads else None,
        with_loglik=with_loglik, with_final_norm=needs_full_depth(layers, model_config.num_hidden_layers, with_loglik),
        compressor=config.compressor, with_texts=True,
    )


def _attributes(config: ExtractConfig, loaded: LoadedModel, split: Split, view: View, identity: dict) -> dict:
    import torch
    import transformers

    tokenizer = loaded.tokenizer
    return {
        "model": config.model,
        "model_id": loaded.model_id,
        "model_class": type(loaded.model).__name__,
        "model_n_blocks": loaded.model.config.num_hidden_layers,
        "tokenizer": getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
        "tokenizer_class": type(tokenizer).__name__,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "dataset": split.dataset,
        "split": split.split,
        "data_file": str(split.path),
        "fingerprint": split.fingerprint,
        "view": view.name,
        "view_template": view.continuation,
        "view_appends_eos": view.append_eos,
        "view_description": view.description,
        "prompt_format": view.prompt_format,
        "site": config.site,
        "limit": config.limit,
        "n_examples_in_split": len(split.examples),
        "n_skipped_examples": len(split.skipped),
        "skipped_examples": [str(problem) for problem in split.skipped],
        "identity": identity,
        "software": software_versions(),
        "config": {
            "batch_tokens": config.batch_tokens,
            "padding_side": config.padding_side,
            "compute_dtype": config.compute_dtype,
            "quantization": config.quantize,
            "device_map": _device_map(loaded),
            "attention": loaded.attention,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def _fill(pending: list[PendingStore], config: ExtractConfig, loaded: LoadedModel, split: Split, table: SequenceTable,
          *, shard: Shard = Shard()) -> list[StoreResult]:
    """Compute, write and flag every block of this shard that some store still misses (each block's
    prompts once for all the views that miss it); mark each store complete once every block (of all
    shards) is flagged, else report it ``partial``."""
    import torch
    from tqdm import tqdm

    from actstore.blocks import run_block
    from actstore.capture import DecoderParts, LastTokenCapture
    from actstore.prompt_reuse import Responses

    parts = DecoderParts.of(loaded.model)
    device = loaded.input_device
    max_tokens = getattr(loaded.model.config, "max_position_embeddings", None)
    layout = pending[0].store.layout  # the same sequences and blocks in every store given
    todo, already = {}, 0
    for target in pending:
        done = target.store.blocks_done()
        todo[target.view.name] = {b for b in range(layout.n_blocks) if not done[b] and shard.owns(b)}
        already += sum(layout.block_length(b) for b in range(layout.n_blocks) if done[b])
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
            views = []
            for target in needing:
                name = target.view.name
                with clocks[name].stage("tokenize"):
                    sequences = encode_rows(table, start, stop, loaded.tokenizer, target.view, max_tokens=max_tokens,
                                            source=str(split.path))
                views.append(Responses(name, sequences, captures[name], target.store.layout.with_loglik, clocks[name]))
            before = dict(shared_clock.seconds)
            outs = run_block(parts, views, pad_id=loaded.tokenizer.pad_token_id, batch_tokens=config.batch_tokens,
                             padding_side=config.padding_side, on_batch=bar.update, prompt_reuse=config.prompt_reuse,
                             shared_clock=shared_clock)
            for target in needing:
                name = target.view.name
                for stage in shared[name]:
                    shared[name][stage] += (shared_clock.seconds[stage] - before[stage]) / len(needing)
                with clocks[name].stage("write"):  # only the wait for the previous block's write
                    writer[name].submit(block, {f.name: getattr(outs[name], f.name) for f in fields(outs[name])})
        for target in pending:
            with clocks[target.view.name].stage("write"):
                writer[target.view.name].wait()
    wall = time.perf_counter() - started
    results = []
    for target in pending:
        name = target.view.name
        timings = {**clocks[name].totals(), "write_background_s": writer[name].busy_s}
        for stage, seconds in shared[name].items():
            timings[f"{stage}_s"] += seconds
        # The views ran interleaved: each is charged its own stages and its share of the shared passes.
        seconds = sum(v for k, v in timings.items() if k != "write_background_s") if len(pending) > 1 else wall
        results.append(_complete(target, todo[name], seconds, Timings(**timings), split, len(pending) > 1 and names))
    return results


def _capture_plan(layout: StoreLayout, n_blocks: int):
    from actstore.capture import CapturePlan

    return CapturePlan.for_request(layout.layers, n_blocks, heads=bool(layout.n_heads), full_depth=layout.with_final_norm)


def _complete(target: PendingStore, todo: set[int], seconds: float, timings: Timings, split: Split,
              together: str | bool) -> StoreResult:
    store, layout, view = target.store, target.store.layout, target.view
    computed = sum(layout.block_length(b) for b in todo)
    if not store.blocks_done().all():  # other processes still write their blocks; the last one marks it
        return StoreResult(store.url, split.dataset, split.split, view.name, "partial", layout.n_sequences, len(todo),
                           layout.n_blocks, computed, seconds, timings)
    extra = {"views_together": together} if together else {}
    store.mark_complete(run_status=target.status, blocks_computed=len(todo), sequences_computed=computed,
                        seconds=round(seconds, 3), sequences_per_second=round(computed / seconds, 3) if seconds else None,
                        timings={k: round(v, 3) for k, v in asdict(timings).items()}, **extra)
    return StoreResult(store.url, split.dataset, split.split, view.name, target.status, layout.n_sequences, len(todo),
                       layout.n_blocks, computed, seconds, timings)


def _finished(store: ActivationStore, url: str, split: Split, view: View) -> StoreResult:
    layout = store.layout
    return StoreResult(url, split.dataset, split.split, view.name, "complete", layout.n_sequences, 0, layout.n_blocks, 0, 0.0)


def _short(value) -> str:
    if isinstance(value, list) and len(value) > 6 and value == list(range(value[0], value[-1] + 1)):
        return f"{value[0]}..{value[-1]}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _device_map(loaded: LoadedModel) -> dict | str:
    """Where each block ran: accelerate's map for a placed model, else its one device."""
    placed = getattr(loaded.model, "hf_device_map", None)
    return {name: str(device) for name, device in placed.items()} if placed else str(loaded.input_device)
