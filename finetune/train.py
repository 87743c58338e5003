"""Training LoRA and prompt-tuning reward models on a source distribution's train split.

One (best, other) pair per training example (seeded), loss -log sigmoid(r_best - r_other),
AdamW with a constant learning rate and gradient clipping at 0.3 (the reference's settings).
accelerate places the model and, under ``accelerate launch``, shards batches over processes;
``--batch-size`` is pairs per process (``split_steps``: pairs per step, split over the processes, as
`genies run` trains one set together; finetune.step_share). The frozen base model is loaded in the training precision
(bfloat16 under bf16 autocast), placed by the same ``ModelSpec`` as extraction (one device, a
placement over several, or quantized: 4-bit base + LoRA is QLoRA); adapters and head train in
float32. Gradient checkpointing: see finetune.memory.
"""

from __future__ import annotations

import math
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from common import UserError, check_number
from actstore.engine.threads import compute_threads
from actstore.models import DEFAULT_MODEL, model_fingerprint
from actstore.models.placement import QuantizedPlacement
from common.settings import SEED_MAX, check_choices, setting
from actstore.engine.views import PromptFormat
from finetune.devices import Precision, mixed_precision
from finetune.memory import peak_memory, wants_checkpointing
from finetune.reward_model import AdapterSettings, check_method, default_learning_rate
from distributions.data import DATA_DIR_HELP

DEFAULT_EPOCHS = 3  # the paper's runs saw about 2.7 to 5.3 epochs of a 600-example source
MAX_DEFAULT_STEPS = 150  # the paper's longest runs


@dataclass(frozen=True, kw_only=True)
class TrainConfig(QuantizedPlacement):
    """`finetune train`: each documented field is one of its options."""

    method: str = setting(help="lora or prompt-tuning.")
    model: str = setting(DEFAULT_MODEL, "Base model: alias, local path or cached hub id.")
    dataset: str = setting(help="Source distribution; its train split is used.")
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    out: str | None = setting(None, "Run directory (default: <cache>/finetune/<method>-<model>-<dataset>).")
    steps: int | None = setting(None, "Optimizer steps (default: about 3 epochs, at most 150).")
    learning_rate: float | None = setting(None, "Learning rate (default: 2e-4 for lora, 5.2e-3 for prompt-tuning).",
                                          option="--lr")
    batch_size: int = setting(16, "Pairs per step (per process).")
    max_tokens: int = setting(8192, "Most padded tokens per forward/backward pass: a step whose pairs hold more runs "
                                     "in several passes, gradients summed (the same step, less activation memory).")
    limit: int | None = setting(None, "Use only the first N training examples.")
    seed: int = setting(0, "Seeds pair sampling, initialization and shuffling.", at_least=0, at_most=SEED_MAX)
    precision: Precision = setting("auto", "fp32, bf16 (autocast; the frozen base model in bfloat16, adapter and head "
                                           "in float32), or auto (bf16 where the hardware runs it natively).")
    gradient_checkpointing: bool | None = setting(
        None, "Recompute each block in the backward pass: far less activation memory, about 1/3 more compute "
              "(default: on for base models of 1B parameters or more).")
    prompt_format: PromptFormat = setting("raw", "chat: the prompt as a user turn in the tokenizer's chat template "
                                                 "(recorded in the run).")
    max_grad_norm: float = 0.3
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    n_virtual_tokens: int = 10
    # Under a launch of several processes: each step's ``batch_size`` pairs split over the processes (DDP), the
    # steps of one process (finetune.step_share; `genies run` training one set together), instead of
    # ``batch_size`` pairs per process.
    split_steps: bool = False

    def __post_init__(self):
        check_method(self.method)
        check_choices(self)
        for name in ("steps", "batch_size", "max_tokens", "limit", "lora_r", "n_virtual_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        check_number("--lr", self.learning_rate)
        check_number("max_grad_norm", self.max_grad_norm)
        check_number("lora_alpha", self.lora_alpha)
        check_number("lora_dropout", self.lora_dropout, above=False)
        if self.lora_dropout >= 1:
            raise UserError(f"lora_dropout must be below 1, got {self.lora_dropout}")

    def model_spec(self, device, precision: str) -> "ModelSpec":
        """The base model's spec on this process's ``device``, in the dtype of accelerate's ``precision``."""
        from actstore.models import ModelSpec

        return ModelSpec.requested(self.model, compute_dtype="bfloat16" if precision == "bf16" else "float32",
                                   fallback_device=str(device), device_map=self.device_map,
                                   max_memory=self.max_memory, offload_dir=self.offload_dir,
                                   quantization=self.quantize, attention=self.attention, trains=True)

    @property
    def settings(self) -> AdapterSettings:
        return AdapterSettings(
            self.method,
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            n_virtual_tokens=self.n_virtual_tokens,
        )

    @property
    def resolved_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else default_learning_rate(self.method)

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out).expanduser()
        from common import default_finetune_dir

        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.model).name or self.model)
        return default_finetune_dir() / f"{self.method}-{slug}-{self.dataset}"


@dataclass
class TrainResult:
    out_dir: Path
    method: str
    steps: int
    learning_rate: float
    batch_size: int
    n_processes: int
    precision: str  # what ran: "fp32" or "bf16"
    n_train_pairs: int
    dropped_examples: int
    losses: list[float] = field(default_factory=list)  # mean pair loss per step
    train_seconds: float = 0.0  # the optimization loop
    total_seconds: float = 0.0  # including model loading and tokenization
    gradient_checkpointing: bool = False
    peak_host_rss_bytes: int = 0  # this process's peak resident memory, loading included
    peak_gpu_bytes: int | None = None  # peak memory torch allocated on the GPUs; None without one
    is_main_process: bool = True  # under `accelerate launch`, only the main process reports

    def mean_loss(self, which: str) -> float:
        return mean_loss(self.losses, which)

    def as_dict(self) -> dict:
        record = {**asdict(self), "out_dir": str(self.out_dir)}
        del record["is_main_process"]
        return record


def mean_loss(losses: list[float], which: str, fraction: float = 0.2) -> float:
    """Mean loss over the first or last ``fraction`` of the steps (single steps are noisy)."""
    k = max(1, int(len(losses) * fraction))
    window = losses[:k] if which == "first" else losses[-k:]
    return float(sum(window) / len(window))


def default_steps(n_pairs: int, pairs_per_step: int) -> int:
    """About DEFAULT_EPOCHS passes over the pairs, at most MAX_DEFAULT_STEPS."""
    return max(1, min(MAX_DEFAULT_STEPS, math.ceil(DEFAULT_EPOCHS * n_pairs / pairs_per_step)))


def train_reward_model(config: TrainConfig, *, progress: bool = True, loaded=None, seal: dict | None = None) -> TrainResult:
    """Train, save into ``config.out_dir()`` and return the losses and timings.

    ``loaded``: the base model already loaded (``genies run`` shares one); its adapter is removed
    again after training, so the caller gets its model back unchanged. ``seal`` is kept in the run
    directory's completion marker (the benchmark runner records data fingerprints there)."""
    from accelerate.utils import set_seed

    from actstore.models.quantization import check_quantization
    from finetune.devices import check_adapter_placement
    from distributions.data import load_split, resolve_data_dir

    started = time.perf_counter()
    accelerator = _fresh_accelerator(config.precision)
    spec = config.model_spec(accelerator.device, accelerator.mixed_precision) if loaded is None else loaded.spec
    check_quantization(spec.quantization, spec.main_device)
    set_seed(config.seed)
    data_dir = resolve_data_dir(config.data_dir)
    split = load_split(data_dir, config.dataset, "train")
    shared_model = loaded is not None
    loaded = loaded or spec.load()
    check_adapter_placement(loaded)
    encoded, pairs = _training_pairs(config, loaded, split.examples[: config.limit] if config.limit else split.examples)
    per_step = config.batch_size * (1 if config.split_steps else accelerator.num_processes)
    steps = config.steps or default_steps(len(pairs), per_step)
    run = _prepare_training(config, accelerator, loaded, pairs)
    loop_started = time.perf_counter()
    with compute_threads(None):
        losses = _optimize(run, accelerator, config, steps, loaded.input_device,
                           progress=progress and accelerator.is_main_process)
    result = TrainResult(
        out_dir=config.out_dir(),
        method=config.method,
        steps=steps,
        learning_rate=config.resolved_learning_rate,
        batch_size=config.batch_size,
        n_processes=accelerator.num_processes,
        precision="fp32" if accelerator.mixed_precision == "no" else accelerator.mixed_precision,
        n_train_pairs=len(pairs),
        dropped_examples=len(encoded.dropped_examples),
        losses=losses,
        train_seconds=time.perf_counter() - loop_started,
        is_main_process=accelerator.is_main_process,
        gradient_checkpointing=run.checkpointing,
    )
    peak = peak_memory()
    result.peak_host_rss_bytes, result.peak_gpu_bytes = peak.host_rss_bytes, peak.gpu_bytes
    accelerator.wait_for_everyone()
    result.total_seconds = time.perf_counter() - started
    if accelerator.is_main_process:
        _save(config, result, accelerator.unwrap_model(run.model).eval(), loaded, data_dir, split, seal)
    accelerator.wait_for_everyone()
    if shared_model:
        _restore_base(run.reward_model, run.checkpointing)
    return result


@dataclass
class _Training:
    """What the optimization loop works on, prepared by accelerate."""

    reward_model: torch.nn.Module  # as built (the shared base model's adapter is taken out of it again)
    model: torch.nn.Module  # as accelerate prepared it
    optimizer: torch.optim.Optimizer
    loader: object
    trainable: list[torch.nn.Parameter]
    checkpointing: bool


def _fresh_accelerator(precision: str):
    """accelerate keeps its precision in process-wide state and refuses a second Accelerator with
    another one; each training run here is self-contained, so start from a fresh state (the
    process-group state, PartialState, is kept)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision(precision))


def _training_pairs(config: TrainConfig, loaded, examples):
    """The examples tokenized for the model's context (too long ones dropped), and one seeded
    (best, other) pair per example."""
    from finetune.pairs import sample_training_pairs
    from finetune.sequences import context_length, encode_examples

    encoded = encode_examples(
        loaded.tokenizer,
        examples,
        max_length=context_length(loaded.model, loaded.tokenizer),
        extra_tokens=config.settings.extra_tokens,
        prompt_format=config.prompt_format,
    )
    if not encoded.sequences:
        raise UserError(f"{config.dataset}: every training example is longer than the model's context ({encoded.max_length} tokens)")
    return encoded, sample_training_pairs(encoded, config.seed)


def _prepare_training(config: TrainConfig, accelerator, loaded, pairs) -> _Training:
    """The reward model on its frozen base, its optimizer and the shuffled pair loader, through accelerate."""
    from torch.utils.data import DataLoader

    from finetune.pairs import PairCollator
    from finetune.reward_model import new_reward_model
    from finetune.step_share import SplitCollator

    spec = loaded.spec
    checkpointing = wants_checkpointing(config.gradient_checkpointing, loaded.model)
    base = _prepare_base(loaded.model, quantized=spec.quantization != "none", checkpointing=checkpointing)
    reward_model = new_reward_model(base, config.settings, seed=config.seed)
    trainable = [p for p in reward_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.resolved_learning_rate, weight_decay=0.0)
    collator = PairCollator(loaded.tokenizer.pad_token_id, config.max_tokens)
    split = config.split_steps and accelerator.num_processes > 1
    if split:  # every process draws one process's steps and collates its share of each
        collator = SplitCollator(collator, accelerator.process_index, accelerator.num_processes)
    loader = DataLoader(pairs, batch_size=config.batch_size, shuffle=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(config.seed))
    # accelerate moves the model only where the spec put it on accelerate's own device; a placed,
    # quantized or elsewhere-placed base stays put, and batches go to where its embeddings run.
    moved = spec.quantization == "none" and spec.device_map == str(accelerator.device)
    return _Training(reward_model, accelerator.prepare_model(reward_model, device_placement=moved),
                     accelerator.prepare_optimizer(optimizer),
                     loader if split else accelerator.prepare_data_loader(loader, device_placement=False),
                     trainable, checkpointing)


def _optimize(run: _Training, accelerator, config: TrainConfig, steps: int, input_device, *, progress: bool) -> list[float]:
    """``steps`` optimizer steps over the pair loader (as many passes as that takes); the mean loss of each."""
    from tqdm.auto import tqdm

    from finetune.reward_model import pair_loss
    from finetune.step_share import StepShare

    losses: list[float] = []
    run.model.train()
    bar = tqdm(total=steps, desc=f"{config.method} {config.dataset}", disable=not progress)
    while len(losses) < steps:
        for step in run.loader:
            step = step if isinstance(step, StepShare) else StepShare.alone(step)
            loss = 0.0
            for index, (batch, weight) in enumerate(zip(step.passes, step.weights)):  # the step's mean loss
                # Only the last pass synchronizes gradients across processes, whose pass counts may differ.
                with accelerator.no_sync(run.model) if index < len(step.passes) - 1 else nullcontext():
                    part = pair_loss(run.model(**{name: tensor.to(input_device) for name, tensor in batch.items()}))
                    accelerator.backward(part * (weight * step.gradient_scale))
                loss += part.detach() * weight
            accelerator.clip_grad_norm_(run.trainable, config.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            losses.append(float(accelerator.reduce(loss, reduction=step.loss_reduction)))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if len(losses) == steps:
                break
    bar.close()
    return losses


def _save(config: TrainConfig, result: TrainResult, reward_model, loaded, data_dir: Path, split, seal: dict | None) -> None:
    """The run directory: adapter and head, and what made them (model, data fingerprint, config, result)."""
    from finetune.checkpoint import save_reward_model

    record = {
        "model": config.model,
        "model_id": loaded.model_id,
        "model_fingerprint": model_fingerprint(config.model),
        "dataset": config.dataset,
        "data_dir": str(data_dir),
        "data_fingerprint": split.fingerprint,
        "prompt_format": config.prompt_format,
        "config": asdict(config),
        "result": {k: v for k, v in result.as_dict().items() if k != "out_dir"},
    }
    save_reward_model(result.out_dir, reward_model, record, seal=seal)


def _prepare_base(causal_lm: torch.nn.Module, *, quantized: bool, checkpointing: bool) -> torch.nn.Module:
    """Frozen base ready for an adapter: k-bit preparation (QLoRA) and gradient checkpointing."""
    if quantized:
        from peft import prepare_model_for_kbit_training

        causal_lm = prepare_model_for_kbit_training(causal_lm, use_gradient_checkpointing=False)
    if checkpointing:
        _checkpointing(causal_lm, True)
        causal_lm.enable_input_require_grads()  # so a frozen embedding still lets gradients reach the adapters
    return causal_lm


def _checkpointing(causal_lm: torch.nn.Module, enabled: bool) -> None:
    """Non-reentrant gradient checkpointing on or off (transformers 5 renamed it activation checkpointing)."""
    if hasattr(causal_lm, "activation_checkpointing_enable"):
        if enabled:
            causal_lm.activation_checkpointing_enable({"use_reentrant": False})
        else:
            causal_lm.activation_checkpointing_disable()
    elif enabled:
        causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        causal_lm.gradient_checkpointing_disable()


def _restore_base(reward_model, checkpointing: bool) -> None:
    """Take the adapter out of a shared base model and switch checkpointing off again."""
    from finetune.reward_model import quiet_peft

    base = reward_model.causal_lm
    if reward_model.settings.method == "lora":
        with quiet_peft():
            base = reward_model.peft_model.unload()
    if checkpointing:
        _checkpointing(base, False)
        base.disable_input_require_grads()
    base.eval()
