"""The reward model: a causal LM with a peft adapter and a scalar linear head on the last token.

Unlike the reference (a two-logit ``SequenceClassification`` head whose logits trl averages),
the head has one output: reward = w . h, with h the final (normed) hidden state at the last
real token of prompt + response + EOS, i.e. at the EOS. The LM head is never run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from actstore.errors import UserError
from finetune.sequences import last_real_position

METHODS = ("lora", "prompt-tuning")
DEFAULT_LEARNING_RATES = {"lora": 2e-4, "prompt-tuning": 5.2e-3}  # the paper's settings


@dataclass(frozen=True)
class AdapterSettings:
    method: str  # "lora" or "prompt-tuning"
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")
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


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"unknown fine-tuning method {method!r} (choose from {', '.join(METHODS)})")
    return method


class RewardModel(nn.Module):
    """``forward(input_ids, attention_mask) -> rewards`` of shape (batch,)."""

    def __init__(self, peft_model: nn.Module, head: nn.Linear, settings: AdapterSettings):
        super().__init__()
        self.peft_model = peft_model
        self.head = head
        self.settings = settings

    @property
    def causal_lm(self) -> nn.Module:
        return self.peft_model.get_base_model()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        body = self.causal_lm.get_decoder()
        if self.settings.method == "prompt-tuning":
            embeds = self.causal_lm.get_input_embeddings()(input_ids)
            virtual = self.peft_model.get_prompt(batch_size=input_ids.shape[0]).to(embeds.dtype)
            embeds = torch.cat([virtual, embeds], dim=1)
            attention_mask = torch.cat([attention_mask.new_ones(virtual.shape[:2]), attention_mask], dim=1)
            hidden = body(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
        else:
            hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        last = last_real_position(attention_mask)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)


def new_reward_model(causal_lm: nn.Module, settings: AdapterSettings, *, seed: int) -> RewardModel:
    """Fresh adapter (seeded initialization) and a zero head, so every pair starts at P = 0.5."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(causal_lm, settings.peft_config())
    head = nn.Linear(causal_lm.config.hidden_size, 1, bias=False)
    nn.init.zeros_(head.weight)
    head.to(device=causal_lm.device, dtype=next(causal_lm.parameters()).dtype)
    return RewardModel(peft_model, head, settings)


def pair_loss(rewards: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged; rows are [chosen..., rejected...]."""
    chosen, rejected = rewards.chunk(2)
    return -F.logsigmoid(chosen - rejected).mean()
