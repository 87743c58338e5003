"""The reward model: a causal LM with a peft adapter and a scalar linear head on the last token.

Unlike the reference (a two-logit ``SequenceClassification`` head whose logits trl averages),
the head has one output: reward = w . h, with h the final (normed) hidden state at the last
real token of prompt + response + EOS, i.e. at the EOS. The LM head is never run, and each
prompt runs once for all its responses (``shared_prompts``).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

import registry
from actstore.engine.capture import DecoderParts
from common import UserError
from actstore.models.families import lora_targets
from actstore.models.quantization import quiet_bitsandbytes
from finetune.shared_prompts import run_shared
from registry import Kind

quiet_bitsandbytes()  # peft imports bitsandbytes where it is installed


@dataclass(frozen=True)
class AdapterSettings:
    method: str  # "lora" or "prompt-tuning"
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: tuple[str, ...] = ()  # none given: the model family's (actstore.models.families.lora_targets)
    n_virtual_tokens: int = 10

    def __post_init__(self):
        check_method(self.method)

    @property
    def extra_tokens(self) -> int:
        """Tokens the adapter puts in front of every sequence."""
        return self.n_virtual_tokens if self.method == "prompt-tuning" else 0

    def peft_config(self):
        from peft import LoraConfig, PromptTuningConfig, TaskType

        if self.method == "lora":
            return LoraConfig(
                task_type=TaskType.CAUSAL_LM,
                r=self.lora_r,
                lora_alpha=self.lora_alpha,
                lora_dropout=self.lora_dropout,
                target_modules=list(self.lora_target_modules),
                bias="none",
            )
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=self.n_virtual_tokens)

    def as_dict(self) -> dict:
        return {**asdict(self), "lora_target_modules": list(self.lora_target_modules)}

    @classmethod
    def from_dict(cls, raw: dict) -> "AdapterSettings":
        return cls(**{**raw, "lora_target_modules": tuple(raw["lora_target_modules"])})


def default_learning_rate(method: str) -> float:
    """The method's learning rate unless one is given (its registry entry: the paper's setting)."""
    return dict(registry.get(check_method(method)).params)["learning_rate"]


def check_method(method: str) -> str:
    trained = registry.names(lambda spec: spec.kind is Kind.LIVE_TRAINED)
    if method not in trained:
        raise UserError(f"unknown fine-tuning method {method!r} (choose from {', '.join(trained)})")
    return method


class RewardModel(nn.Module):
    """``forward(**batch) -> rewards``, one per continuation row of a ``collate_groups`` batch."""

    def __init__(self, peft_model: nn.Module, head: nn.Linear, settings: AdapterSettings):
        super().__init__()
        self.peft_model = peft_model
        self.head = head
        self.settings = settings

    @property
    def causal_lm(self) -> nn.Module:
        return self.peft_model.get_base_model()

    def forward(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        continuation_ids: torch.Tensor,
        continuation_mask: torch.Tensor,
        group: torch.Tensor,
    ) -> torch.Tensor:
        """Rewards of a batch from ``shared_prompts.collate_groups``, one per continuation row."""
        virtual = None
        if self.settings.method == "prompt-tuning":
            # float32 virtual tokens, fed to the base model in its own dtype (gradients reach them through the cast)
            virtual = self.peft_model.get_prompt(batch_size=prompt_ids.shape[0])
            virtual = virtual.to(self.causal_lm.get_input_embeddings().weight.dtype)
        last_hidden = run_shared(
            self.causal_lm.get_decoder(), prompt_ids, prompt_mask, continuation_ids, continuation_mask, group,
            prefix_embeds=virtual,
        )
        return self.head(last_hidden.to(self.head.weight.device, self.head.weight.dtype)).squeeze(-1)


def new_reward_model(causal_lm: nn.Module, settings: AdapterSettings, *, seed: int) -> RewardModel:
    """Fresh adapter (seeded initialization) and a zero head, so every pair starts at P = 0.5.
    The adapter and the head train in float32 whatever the frozen base model's dtype."""
    from peft import get_peft_model

    if settings.method == "lora" and not settings.lora_target_modules:
        settings = replace(settings, lora_target_modules=lora_targets(causal_lm.config))
    torch.manual_seed(seed)
    with quiet_peft():
        peft_model = get_peft_model(causal_lm, settings.peft_config(), autocast_adapter_dtype=True)
    head = nn.Linear(causal_lm.config.hidden_size, 1, bias=False)
    nn.init.zeros_(head.weight)
    head.to(device=DecoderParts.of(causal_lm).output_device, dtype=torch.float32)
    return RewardModel(peft_model, head, settings)


@contextmanager
def quiet_peft():
    """peft calls a transformers method that transformers itself marks deprecated; the warning
    is about peft's internals, not anything a user can change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def pair_loss(rewards: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged; rows come in (chosen, rejected) twos."""
    pairs = rewards.view(-1, 2)
    return -F.logsigmoid(pairs[:, 0] - pairs[:, 1]).mean()
