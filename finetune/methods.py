"""The methods finetune runs live on the model, as entries of the benchmark's method registry
(the registry package): reward models it trains (`finetune train`, then `finetune eval RUN_DIR`) and the
few-shot baseline (`finetune eval --method few-shot`). Imports no torch."""

from __future__ import annotations

from registry import Kind, MethodSpec

METHODS = (
    MethodSpec("few-shot", Kind.LIVE_UNTRAINED, "log-likelihood with k solved training examples before the prompt",
               site="model", base_model_baseline=True, paper_intervention="few_shot"),
    MethodSpec("lora", Kind.LIVE_TRAINED, "LoRA adapters + scalar head trained on (best, other) pairs", site="model",
               paper_intervention="lora_fine_tuning", params=(("learning_rate", 2e-4),)),  # the paper's setting
    MethodSpec("prompt-tuning", Kind.LIVE_TRAINED, "trained virtual prompt tokens + scalar head", site="model",
               paper_intervention="prompt_tuning", params=(("learning_rate", 5.2e-3),)),
)
