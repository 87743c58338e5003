"""A tiny random causal LM of each supported family, built offline from its config (float32),
with the byte-level tokenizer: every special case of the family switched on where it exists
(a small sliding window on some or all layers, the family's logit processing)."""

from __future__ import annotations

import torch

from actstore.models.families import FAMILIES
from actstore.models import LoadedModel, byte_tokenizer

WINDOW = 12  # tokens: the test prompts (20-70 byte tokens) run well past it
MIXED = ["sliding_attention", "full_attention", "sliding_attention"]  # three blocks

# Per family, what differs from the common tiny shape: its special cases, and what its config spells otherwise.
SPECIAL_CASES: dict[str, dict] = {
    "mistral": dict(sliding_window=WINDOW),
    "mixtral": dict(sliding_window=WINDOW, num_local_experts=4, num_experts_per_tok=2),
    "qwen2": dict(use_sliding_window=True, sliding_window=WINDOW, layer_types=MIXED),
    "qwen2_moe": dict(use_sliding_window=True, sliding_window=WINDOW, layer_types=MIXED, num_experts=4,
                      num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=64),
    "qwen3": dict(use_sliding_window=True, sliding_window=WINDOW, layer_types=MIXED, head_dim=16),
    "qwen3_moe": dict(use_sliding_window=True, sliding_window=WINDOW, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, head_dim=16),
    "gemma": dict(head_dim=16),
    "gemma2": dict(head_dim=16, sliding_window=WINDOW, layer_types=MIXED, final_logit_softcapping=1.5,
                   query_pre_attn_scalar=16),
    "gemma3_text": dict(head_dim=16, sliding_window=WINDOW, layer_types=MIXED, final_logit_softcapping=1.5,
                        query_pre_attn_scalar=16),
    "phi3": dict(sliding_window=WINDOW),
    "granite": dict(logits_scaling=0.25),
    "cohere": dict(logit_scale=4.0),
    "starcoder2": dict(sliding_window=WINDOW),
    "falcon": dict(num_kv_heads=2, new_decoder_architecture=True),
    "olmo3": dict(sliding_window=WINDOW, layer_types=MIXED),
    "smollm3": dict(no_rope_layers=[1, 0, 1]),  # the middle block without rotary positions
    "glm": dict(head_dim=16),
    "glm4": dict(head_dim=16),
    "cohere2": dict(sliding_window=WINDOW, layer_types=MIXED, logit_scale=4.0),
    "exaone4": dict(sliding_window=WINDOW, layer_types=MIXED),
    "gpt_oss": dict(sliding_window=WINDOW, layer_types=MIXED, num_local_experts=4, num_experts_per_tok=2, head_dim=16),
    # multi-head latent attention (keys and values through a rank-16 latent), routed experts after a dense block
    "deepseek_v3": dict(q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
                        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=1,
                        n_group=1, topk_group=1, num_key_value_heads=4),
    "gptj": dict(rotary_dim=8),
    "opt": dict(ffn_dim=128, word_embed_proj_dim=64),  # learned positions, offset by 2
}
# Where a family's logits are processed after the head, the test checks that the processing matters.
PROCESSED_LOGITS = ("gemma2", "gemma3_text", "granite", "cohere", "cohere2")


def tiny_family_model(model_type: str, seed: int = 0) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = byte_tokenizer()
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, initializer_range=0.2)
    if model_type == "falcon":
        del common["num_key_value_heads"]
    config = AutoConfig.for_model(model_type, **{**common, **SPECIAL_CASES.get(model_type, {})})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return LoadedModel(model, tokenizer, f"tiny-{model_type}", f"tiny-{model_type}(seed={seed})")


def all_families() -> list[str]:
    return list(FAMILIES)
