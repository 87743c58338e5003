"""`actstore plan`: what an extraction needs, from the model's config alone, before anything loads.

The model is built on the meta device from its config (no weight is read), so its parameters and each
module's size are the model's own; the placement is accelerate's ``infer_auto_device_map``, which
transformers' loader runs for ``--device-map auto`` with ``--max-memory``. Beside the weights, the device
that computes holds one pass's activations (``batch_budget.bytes_per_token`` per padded token), the
log-likelihood head's working set (one chunk of float32 logits and one float32 chunk of the head's rows: no
float32 copy of the head), and one block's captured activations before they are written. Stores are sized as
written: per sequence and stored layer one vector of the storage dtype, the final norm, the per-sequence
columns; compression (blosc-zstd) keeps real activations at about 0.96x of that, so it is an upper bound.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

from common import UserError, parse_list
from common.settings import setting
from distributions.data import DATA_DIR_HELP
from actstore.engine.batch_budget import CPU_BATCH_TOKENS, bytes_per_token
from actstore.engine.forward import LOGIT_ELEMENTS_PER_CHUNK
from actstore.engine.logits import HEAD_CHUNK_BYTES
from actstore.models.shapes import SHAPES
from actstore.store.layout import PER_SEQUENCE

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1 << 30
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit values, an 8-bit absmax per 64, double-quantized
INT8_BYTES_PER_WEIGHT = 1.0


@dataclass(frozen=True)
class ModelFootprint:
    """A model's weights as loaded: in total and per device of the placement."""

    parameters: int
    weight_bytes: int
    head_bytes: int  # the LM head's weight (within weight_bytes)
    hidden_size: int
    vocab_size: int
    n_blocks: int
    placement: dict[str, str] = field(default_factory=dict)  # module -> device ("0", "cpu", "disk")
    bytes_by_device: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PassFootprint:
    """What the computing device holds beside the weights while one pass runs."""

    batch_tokens: int
    activation_bytes: int
    head_bytes: int  # the log-likelihood head's working set
    captured_bytes: int  # one block's captured activations (float32, every stored layer)

    @property
    def total(self) -> int:
        return self.activation_bytes + self.head_bytes + self.captured_bytes


@dataclass(frozen=True)
class StoreSize:
    dataset: str
    split: str
    view: str
    n_sequences: int
    bytes: int


@dataclass(frozen=True)
class TokenCount:
    """Tokens the model computes for one split's views: each sequence whole, and once per shared prefix."""

    dataset: str
    split: str
    whole: int
    tree: int
    views: tuple[str, ...] = ()


def token_count(dataset: str, split: str, table, tokenizer, views, block_size: int) -> TokenCount:
    """Tokens of ``table``'s sequences in every view, whole and through the prefix tree of each block (the
    extraction's own tree: its prompt groups, in blocks of ``block_size`` sequences)."""
    from actstore.engine.prefix_tree import ViewSequences, build_forest
    from actstore.engine.prompt_reuse import group_by_prompt
    from actstore.engine.sequence_table import encode_rows

    whole = tree = 0
    for first in range(0, len(table), block_size):
        stop = min(first + block_size, len(table))
        encoded = [encode_rows(table, first, stop, tokenizer, view, max_tokens=None, source=dataset) for view in views]
        whole += sum(len(s.prompt_ids) + len(s.continuation_ids) for sequences in encoded for s in sequences)
        forest = build_forest([g.members for g in group_by_prompt(encoded[0])],
                              [ViewSequences(view.name, sequences, view.name == "plain", True)
                               for view, sequences in zip(views, encoded)])
        tree += forest.computed_tokens()
    return TokenCount(dataset, split, whole, tree, tuple(view.name for view in views))


def meta_model(config):
    """The model of ``config`` on the meta device: its modules and parameter shapes, no memory."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # as loading does: a tied head is the embeddings' weight, counted once
    return model


def quantized_linear(name: str, module) -> bool:
    """Whether bitsandbytes quantizes ``module``: every nn.Linear but the LM head (transformers skips it)."""
    import torch

    return isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")


def parameter_bytes(model, dtype: str, quantize: str = "none") -> dict[str, int]:
    """Bytes of every parameter and buffer (by its full name) as loaded in ``dtype``, under ``quantize``."""
    per_weight = {"4bit": NF4_BYTES_PER_WEIGHT, "8bit": INT8_BYTES_PER_WEIGHT}.get(quantize)
    sizes, seen = {}, set()
    for module_name, module in model.named_modules():
        quantized = per_weight is not None and quantized_linear(module_name, module)
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if id(tensor) in seen:  # a tied weight
                continue
            seen.add(id(tensor))
            full = f"{module_name}.{name}" if module_name else name
            if quantized and name == "weight":
                sizes[full] = int(tensor.numel() * per_weight)
            elif tensor.is_floating_point():
                sizes[full] = tensor.numel() * DTYPE_BYTES[dtype]
            else:
                sizes[full] = tensor.numel() * tensor.element_size()
    return sizes


def model_footprint(config, dtype: str, quantize: str = "none", max_memory: dict | None = None) -> ModelFootprint:
    """The weights of ``config`` in ``dtype`` (``quantize``), placed by ``max_memory`` ({device: bytes}) when given."""
    import torch

    text = getattr(config, "text_config", None) or config
    model = meta_model(config)
    sizes = parameter_bytes(model, dtype, quantize)
    head = model.get_output_embeddings()
    head_bytes = head.weight.numel() * DTYPE_BYTES[dtype] if head is not None else 0
    if model.config.tie_word_embeddings:
        head_bytes = 0  # the embeddings' weight, counted once
    placement, by_device = {}, {"all": sum(sizes.values())}
    if max_memory:
        from accelerate import infer_auto_device_map
        from accelerate.utils import CustomDtype

        weights_dtype = {"4bit": CustomDtype.INT4, "8bit": torch.int8}.get(quantize, getattr(torch, dtype))
        kept = {} if quantize == "none" else {  # what bitsandbytes leaves in the compute dtype
            name: getattr(torch, dtype) for name, _ in model.named_parameters()
            if not (name.endswith(".weight") and quantized_linear(name.removesuffix(".weight"),
                                                                  model.get_submodule(name.removesuffix(".weight"))))}
        with _quiet_accelerate():  # it warns of devices this machine lacks: the plan is for another
            placed = infer_auto_device_map(model, max_memory=max_memory, dtype=weights_dtype, special_dtypes=kept,
                                           no_split_module_classes=list(model._no_split_modules or ()))
        placement = {name: str(device) for name, device in placed.items()}
        by_device = {}
        for name, size in sizes.items():
            device = _device_of(name, placement)
            by_device[device] = by_device.get(device, 0) + size
    parameters = sum(p.numel() for p in model.parameters())
    return ModelFootprint(parameters, sum(sizes.values()), head_bytes, text.hidden_size, text.vocab_size,
                          text.num_hidden_layers, placement, by_device)


@contextmanager
def _quiet_accelerate():
    logger = logging.getLogger("accelerate.utils.modeling")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _device_of(name: str, placement: dict[str, str]) -> str:
    """The device of the placement entry that is the longest prefix of ``name``."""
    best = max((key for key in placement if key == "" or name == key or name.startswith(key + ".")), key=len,
               default=None)
    return placement[best] if best is not None else "cpu"


def pass_footprint(config, dtype: str, batch_tokens: int, stored_layers: int, block_size: int = 512,
                   attention: str = "sdpa") -> PassFootprint:
    """One pass of ``batch_tokens`` padded tokens on the computing device."""
    text = getattr(config, "text_config", None) or config
    activations = batch_tokens * bytes_per_token(text, DTYPE_BYTES[dtype], attention)
    logits = min(LOGIT_ELEMENTS_PER_CHUNK, batch_tokens * text.vocab_size) * 4
    head = 2 * logits + HEAD_CHUNK_BYTES  # the logits chunk, its log-softmax, one float32 chunk of the head
    captured = block_size * (stored_layers + 1) * text.hidden_size * 4
    return PassFootprint(batch_tokens, activations, head, captured)


def store_bytes(n_sequences: int, stored_layers: int, hidden_size: int, dtype: str = "float16", *,
                loglik: bool = False, heads: tuple[int, int, int] | None = None, text_bytes: int = 0) -> int:
    """Bytes of one store as written, before compression: the residual rows, the final norm, the per-sequence
    columns (and the log-likelihood; ``heads``: (head layers, heads, head_dim) of a ``--site heads`` store), and
    ``text_bytes`` of prompt and response texts."""
    width = DTYPE_BYTES[dtype]
    total = text_bytes + n_sequences * (stored_layers + 1) * hidden_size * width  # residual rows, the final norm
    total += n_sequences * 4 * len(PER_SEQUENCE) + (n_sequences * 8 if loglik else 0)
    if heads:
        layers, n_heads, head_dim = heads
        total += n_sequences * layers * n_heads * head_dim * width
    return total


def device_budget(device: str) -> int | None:
    """Memory of ``device`` here: the host's RAM for the CPU, the GPU's total memory; None when unknown."""
    if device == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(int(device)).total_memory
    return None


def fits(footprint: ModelFootprint, one_pass: PassFootprint, budgets: dict[str, int], computing: str) -> list[str]:
    """Why the plan does not fit (empty: it fits): a device over its budget, weights left for the disk."""
    problems = []
    for device, size in footprint.bytes_by_device.items():
        if device == "disk":
            continue
        need = size + (one_pass.total if device == computing else 0)
        budget = budgets.get(device)
        if budget is not None and need > budget:
            problems.append(f"{device} needs {need / GIB:.1f} GiB of its {budget / GIB:.1f} GiB")
    return problems


def smallest_change(config, dtype: str, quantize: str, one_pass: PassFootprint, budgets: dict[str, int],
                    computing: str) -> str:
    """The first of: bfloat16 instead of float32, 4-bit weights, a smaller --batch-tokens, another GPU, disk
    offload, that makes it fit."""
    budget = budgets.get(computing)
    if budget is None:
        return "give the devices' memory with --max-memory"
    weights = model_footprint(config, dtype, quantize).weight_bytes
    if dtype == "float32":
        halved = model_footprint(config, "bfloat16", quantize).weight_bytes
        if halved + one_pass.total <= budget:
            return f"--compute-dtype bfloat16 (weights {halved / GIB:.1f} GiB)"
    if quantize != "4bit":
        four_bit = model_footprint(config, dtype, "4bit").weight_bytes
        if four_bit + one_pass.total <= budget:
            return f"--quantize 4bit (weights {four_bit / GIB:.1f} GiB)"
    if weights + one_pass.captured_bytes + one_pass.head_bytes < budget:
        per_token = max(1, one_pass.activation_bytes // one_pass.batch_tokens)
        tokens = (budget - weights - one_pass.captured_bytes - one_pass.head_bytes) // per_token // 256 * 256
        if tokens >= 256:
            return f"--batch-tokens {tokens}"
    if computing != "cpu":
        gpus = -(-(weights + one_pass.total) // budget)
        return (f"{gpus} GPUs of this size (--device-map auto --max-memory "
                + ",".join(f"{i}={budget // GIB}GiB" for i in range(gpus)) + ")")
    return "--device-map auto --max-memory cpu=SIZE --offload-dir DIR (weights that do not fit stay on disk)"


def default_batch_tokens(computing: str, requested: int | None) -> int:
    return requested if requested is not None else CPU_BATCH_TOKENS


def require_config(model: str):
    from actstore.models.loading import model_config
    from actstore.models.shapes import SHAPES

    config = model_config(model)
    if config is None:
        raise UserError(f"{model}: no config can be read here (not a local directory or .gguf file, not in the hub "
                        f"cache, not a converted alias, not a named shape: {', '.join(SHAPES)})")
    return config


@dataclass(frozen=True, kw_only=True)
class PlanRequest:
    """`actstore plan`: each documented field is one of its options."""

    model: str = setting(help="A local directory or .gguf file, a cached hub id, an alias, or a named shape ("
                              + ", ".join(SHAPES) + ").")
    datasets: tuple[str, ...] = setting((), "NAME[,NAME...]: size their stores too.", option="--dataset",
                                        parse=parse_list)
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    splits: tuple[str, ...] = setting(("train", "test"), "train, test or both.", option="--split", parse=parse_list)
    views: tuple[str, ...] = setting(("plain",), "plain, stim, yes, no (comma-separated).", parse=parse_list)
    layers: str = setting("all", "all, a list 0,10,20, or inclusive ranges 10:20.")
    limit: int | None = setting(None, "Only the first N examples of each split.")
    dtype: str = setting("float16", "Storage dtype: float16 or float32.")
    compute_dtype: str = setting("auto", "float32, bfloat16 or float16; auto: bfloat16 on a GPU, and on a CPU "
                                         "where it runs bfloat16 natively, else float32.")
    quantize: str = setting("none", "none, 8bit or 4bit.")
    device: str = setting("cpu", "Where it computes: cpu, or a GPU index (0) for a GPU with --max-memory 0=SIZE.")
    max_memory: str | None = setting(None, "Memory per device, e.g. 0=80GiB or 0=70GiB,1=70GiB,cpu=100GiB: the "
                                           "placement is planned over these devices only (the rest: disk).")
    batch_tokens: int | None = setting(None, f"Padded tokens per pass (default {CPU_BATCH_TOKENS}).")
    block_size: int = setting(512, "Sequences per block.")


@dataclass(frozen=True)
class ExtractionPlan:
    request: PlanRequest
    compute_dtype: str
    computing: str
    model: ModelFootprint
    one_pass: PassFootprint
    budgets: dict[str, int]
    stores: list[StoreSize]
    tokens: list[TokenCount]
    problems: list[str]
    change: str | None

    @property
    def fits(self) -> bool:
        return not self.problems


def plan_extraction(request: PlanRequest, splits: list[tuple[str, str, tuple[str, ...]]] | None = None) -> ExtractionPlan:
    """The plan of ``request``'s extraction; ``splits``: (dataset, split, views) to size instead of every
    dataset x split x view of the request (`genies run --plan` passes the stores its run would extract)."""
    from accelerate.utils import convert_file_size_to_int

    from actstore.models import parse_max_memory
    from actstore.models.compute_dtype import resolve_compute_dtype
    from actstore.store.layers import parse_layers

    config = require_config(request.model)
    given = {device: convert_file_size_to_int(size) for device, size in parse_max_memory(request.max_memory)}
    gpus = [device for device in given if device.isdigit()]
    computing = request.device.removeprefix("cuda:").removeprefix("cuda") or "0"
    computing = gpus[0] if gpus and computing == "cpu" else computing
    dtype = request.compute_dtype
    if dtype == "auto":
        dtype = "bfloat16" if computing != "cpu" else resolve_compute_dtype("auto", "cpu")
    placement = None
    if given:
        placement = {int(d) if d.isdigit() else d: size for d, size in given.items()}
        placement.setdefault("cpu", 0)  # only the devices given: what does not fit them goes to the disk
    footprint = model_footprint(config, dtype, request.quantize, placement)
    if not given:
        footprint = ModelFootprint(**{**vars(footprint), "bytes_by_device": {computing: footprint.weight_bytes}})
    n_blocks = footprint.n_blocks
    stored = parse_layers(request.layers, n_blocks, model=request.model)
    one_pass = pass_footprint(config, dtype, default_batch_tokens(computing, request.batch_tokens), len(stored),
                              request.block_size)
    budgets = {device: (given.get(device) if device in given else device_budget(device))
               for device in {*footprint.bytes_by_device, computing} - {"disk"}}
    budgets = {device: budget for device, budget in budgets.items() if budget is not None}
    problems = fits(footprint, one_pass, budgets, computing)
    if footprint.bytes_by_device.get("disk"):
        problems.append(f"{footprint.bytes_by_device['disk'] / GIB:.1f} GiB of weights fit no device and would "
                        "be read from disk (--offload-dir) at every pass")
    change = smallest_change(config, dtype, request.quantize, one_pass, budgets, computing) if problems else None
    if splits is None:
        splits = [(dataset, split, request.views) for dataset in request.datasets for split in request.splits]
    stores, tokens = _data_sizes(request, splits, len(stored), footprint.hidden_size)
    return ExtractionPlan(request, dtype, computing, footprint, one_pass, budgets, stores, tokens, problems, change)


def _data_sizes(request: PlanRequest, splits: list[tuple[str, str, tuple[str, ...]]], stored_layers: int,
                hidden_size: int) -> tuple[list[StoreSize], list[TokenCount]]:
    """The stores' sizes, and the tokens computed (where the model's tokenizer can be read here)."""
    from distributions.data import load_split, resolve_data_dir
    from actstore.engine.sequence_table import sequence_table
    from actstore.engine.views import parse_views

    sizes, tokens = [], []
    if not splits:
        return sizes, tokens
    data_dir = resolve_data_dir(request.data_dir)
    tokenizer = _tokenizer(request.model)
    for dataset, split, views in splits:
        table = sequence_table(load_split(data_dir, dataset, split), request.limit)
        n = len(table)
        texts = sum(len(text.encode()) + 4 for text in (*table.prompts, *table.responses))  # UTF-8, its length
        for view in views:
            sizes.append(StoreSize(dataset, split, view, n, store_bytes(
                n, stored_layers, hidden_size, request.dtype, loglik=view == "plain", text_bytes=texts)))
        if tokenizer is not None:
            tokens.append(token_count(dataset, split, table, tokenizer, parse_views(",".join(views)),
                                      request.block_size))
    return sizes, tokens


def _tokenizer(model: str):
    """The model's tokenizer, or None where it cannot be read here (a named shape)."""
    from actstore.models import load_tokenizer
    from actstore.models.shapes import SHAPES

    if model in SHAPES:
        return None
    try:
        return load_tokenizer(model)
    except UserError:
        return None


def plan_lines(plan: ExtractionPlan) -> list[str]:
    """The plan as the terminal prints it."""
    model, one_pass = plan.model, plan.one_pass
    lines = [f"model {plan.request.model}: {model.parameters / 1e9:.2f} B parameters, {model.n_blocks} blocks, "
             f"width {model.hidden_size}, vocabulary {model.vocab_size}",
             f"weights in {plan.compute_dtype}" + (f", {plan.request.quantize}" if plan.request.quantize != "none" else "")
             + f": {_gib(model.weight_bytes)} (LM head "
             + (f"{_gib(model.head_bytes)})" if model.head_bytes else "tied to the embeddings)")]
    where = ", ".join(f"{device}: {_gib(size)}" for device, size in model.bytes_by_device.items())
    lines.append(f"placement: {where}" + (" (accelerate's, over --max-memory's devices)" if model.placement else ""))
    lines.append(f"one pass on {plan.computing}: {one_pass.batch_tokens} tokens, activations {_gib(one_pass.activation_bytes)}, "
                 f"log-likelihood head {_gib(one_pass.head_bytes)}, a block's captured activations "
                 f"{_gib(one_pass.captured_bytes)}")
    for device, budget in sorted(plan.budgets.items()):
        need = model.bytes_by_device.get(device, 0) + (one_pass.total if device == plan.computing else 0)
        lines.append(f"  {device}: {_gib(need)} of {_gib(budget)}")
    if plan.stores:
        if len(plan.stores) <= 12:
            for store in plan.stores:
                lines.append(f"store {store.dataset}/{store.split}.{store.view}: {store.n_sequences} sequences, "
                             f"{_gib(store.bytes)} before compression")
        lines.append(f"stores: {len(plan.stores)}, {_gib(sum(s.bytes for s in plan.stores))} in all (real activations "
                     "compress to about 0.96x)")
    if len(plan.tokens) > 1:
        whole, tree = sum(c.whole for c in plan.tokens), sum(c.tree for c in plan.tokens)
        lines.append(f"tokens over {len(plan.tokens)} splits: {tree:,} computed through the prefix tree, {whole:,} run "
                     f"whole ({whole / max(tree, 1):.2f}x)")
    for count in plan.tokens if len(plan.tokens) <= 12 else ():
        lines.append(f"tokens {count.dataset}/{count.split} ({', '.join(count.views)}): {count.tree:,} computed "
                     f"through the prefix tree, {count.whole:,} run whole ({count.whole / max(count.tree, 1):.2f}x)")
    if plan.fits:
        lines.append("fits")
    else:
        lines.append(f"does not fit: {'; '.join(plan.problems)}; smallest change: {plan.change}")
    return lines


def _gib(size: int) -> str:
    if size < GIB:
        return f"{size / (1 << 20):.1f} MiB"
    return f"{size / GIB:.2f} GiB" if size < 10 * GIB else f"{size / GIB:.1f} GiB"
