"""What ``finetune eval`` was asked for, checked, and sent to the right evaluator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actstore.common import UserError
from actstore.views import check_prompt_format
from finetune.evaluate import EvalResult

BASELINES = ("zero-shot", "few-shot")
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EvalRequest:
    dataset: str
    run_dir: Path | None = None  # a trained reward model; None for a live baseline
    method: str | None = None  # zero-shot / few-shot, or the run's own method
    model: str | None = None  # base model of a baseline (default: the bundled model)
    data_dir: str | None = None
    split: str = "test"
    limit: int | None = None
    batch_size: int = 16
    shots_from: str | None = None
    n_shots: int = 4
    seed: int = 0
    prompt_format: str | None = None  # None: a run's own, raw for a baseline
    compute_dtype: str = "float32"  # baselines; a reward model runs in its training dtype
    device_map: str | None = None  # see actstore.models.ModelSpec
    max_memory: str | None = None
    offload_dir: str | None = None
    quantize: str | None = None  # None: a run's own quantization, none for a baseline

    def check(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        if self.prompt_format is not None:
            check_prompt_format(self.prompt_format)
        if self.run_dir is not None:
            if self.method in BASELINES:
                raise UserError(f"--method {self.method} evaluates a base model: give --model, not a run directory")
            if self.model is not None or self.shots_from is not None:
                raise UserError("a run directory already names its base model; --model and --shots-from do not apply")
            if self.quantize is not None:
                raise UserError("a run directory's base model is loaded quantized as it was trained; --quantize "
                                "does not apply")
            return
        if self.method not in BASELINES:
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
                                                     max_memory=request.max_memory, offload_dir=request.offload_dir),
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
            device_map=request.device_map,
            max_memory=request.max_memory, offload_dir=request.offload_dir, quantization=request.quantize or "none"),
        loaded=loaded,
    )
