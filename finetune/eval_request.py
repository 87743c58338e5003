"""What ``finetune eval`` was asked for, checked, and sent to the right evaluator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import registry
from common import UserError
from actstore.models.compute_dtype import Dtype
from actstore.models import DEFAULT_MODEL
from actstore.models.placement import QUANTIZE_HELP, Placement, Quantization
from common.settings import SEED_MAX, check_choices, setting
from actstore.engine.views import PromptFormat
from distributions.data import DATA_DIR_HELP
from finetune.evaluate import EvalResult


def base_model_baselines() -> tuple[str, ...]:
    """The methods `finetune eval --method` runs live on a base model (zero-shot, few-shot)."""
    return registry.names(lambda spec: spec.base_model_baseline)


def run_quantization(text: str) -> str | None:
    """``--quantize none`` is the default: a run directory's own quantization, none for a baseline."""
    return None if text == "none" else text


@dataclass(frozen=True, kw_only=True)
class EvalRequest(Placement):
    """`finetune eval`: each documented field is one of its options (RUN_DIR its argument)."""

    run_dir: Path | None = setting(None, "A trained reward model (`finetune train`); none for a live baseline.",
                                   argument=True)
    method: str | None = setting(None, "zero-shot or few-shot for a live baseline (a run directory knows its own "
                                       "method).")
    model: str | None = setting(None, f"Base model of a baseline (default: {DEFAULT_MODEL}).")
    dataset: str = setting(help="Distribution to evaluate on.")
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    split: str = setting("test", "Split to evaluate on.")
    limit: int | None = setting(None, "Use only the first N examples.")
    batch_size: int = setting(16, "Sequences per forward pass.")
    shots_from: str | None = setting(None, "few-shot: distribution whose train split gives the shots.")
    n_shots: int = setting(4, "few-shot: shots per prompt.", option="--shots")
    seed: int = setting(0, "few-shot: seeds the choice of shots.", at_least=0, at_most=SEED_MAX)
    prompt_format: PromptFormat | None = setting(None, "chat: the prompt as a user turn in the tokenizer's chat "
                                                       "template (default: a run's own; raw for baselines).")
    compute_dtype: Dtype = setting("float32", "zero-/few-shot: the base model's dtype (a run directory's model runs in "
                                              "its training dtype).")
    quantize: Quantization | None = setting(None, QUANTIZE_HELP + " Default: a run directory's own; none for a "
                                                  "baseline.", parse=run_quantization)

    def check(self) -> None:
        check_choices(self)
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        if self.run_dir is not None:
            if self.method in base_model_baselines():
                raise UserError(f"--method {self.method} evaluates a base model: give --model, not a run directory")
            if self.model is not None or self.shots_from is not None:
                raise UserError("a run directory already names its base model; --model and --shots-from do not apply")
            if self.quantize is not None:
                raise UserError("a run directory's base model is loaded quantized as it was trained; --quantize "
                                "does not apply")
            return
        if self.method not in base_model_baselines():
            raise UserError(
                "give a run directory (from `finetune train`) or --method zero-shot / few-shot"
                + (f"; got --method {self.method}" if self.method else "")
            )
        if self.method == "few-shot" and not self.shots_from:
            raise UserError("--method few-shot needs --shots-from SOURCE (the distribution whose train split gives the shots)")
        if self.method == "zero-shot" and self.shots_from:
            raise UserError("--shots-from applies to --method few-shot only")


def run_eval(request: EvalRequest, *, loaded=None) -> EvalResult:
    """Evaluate as requested; ``loaded``: a base model already loaded (``genies run`` shares one)."""
    request.check()
    if request.run_dir is not None:
        from finetune.checkpoint import base_model_spec, read_record
        from finetune.evaluate import evaluate_reward_model, run_prompt_format

        record = read_record(request.run_dir)
        trained_method = record["settings"]["method"]
        if request.method is not None and request.method != trained_method:
            raise UserError(f"{request.run_dir}: holds a {trained_method} model, not {request.method}")
        trained_format = run_prompt_format(record)
        if request.prompt_format not in (None, trained_format):
            raise UserError(f"{request.run_dir}: trained with --prompt-format {trained_format}; "
                            f"it is evaluated with the same (drop --prompt-format {request.prompt_format})")
        return evaluate_reward_model(
            request.run_dir,
            request.dataset,
            data_dir=request.data_dir,
            split=request.split,
            limit=request.limit,
            batch_size=request.batch_size,
            spec=None if loaded else base_model_spec(record, device_map=request.device_map,
                                                     max_memory=request.max_memory, offload_dir=request.offload_dir,
                                                     attention=request.attention),
            loaded=loaded,
        )
    from actstore.models import ModelSpec
    from finetune.baselines import evaluate_loglik_baseline

    return evaluate_loglik_baseline(
        request.model or DEFAULT_MODEL,
        request.dataset,
        data_dir=request.data_dir,
        split=request.split,
        limit=request.limit,
        batch_size=request.batch_size,
        shots_from=request.shots_from if request.method == "few-shot" else None,
        n_shots=request.n_shots,
        seed=request.seed,
        prompt_format=request.prompt_format or "raw",
        spec=None if loaded else ModelSpec.requested(
            request.model or DEFAULT_MODEL, compute_dtype=request.compute_dtype,
            device_map=request.device_map, max_memory=request.max_memory, offload_dir=request.offload_dir,
            quantization=request.quantize or "none", attention=request.attention),
        loaded=loaded,
    )
