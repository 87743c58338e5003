"""The one place that knows a model family: what the toolkit reads of a transformers causal LM.

transformers exposes most of it on every model (``get_decoder``, ``get_input_embeddings``,
``get_output_embeddings``, ``config.layer_types``); the rest differs by family and is named
here: the decoder's final norm, the attention output projection whose input ``--site heads``
reads, whether the decoder takes one attention mask per layer type, and the LoRA targets where
peft has no default for the family. A ``model_type`` not listed is refused before any work.

The list is what ``tests/test_families.py`` proves against transformers' own forward pass on a
tiny random model of each family (and what the "Supported models" table of docs/supported-models.md says).
"""

from __future__ import annotations

from dataclasses import dataclass

from common import UserError


@dataclass(frozen=True)
class Family:
    model_type: str  # config.model_type
    name: str  # what users call it
    final_norm: str = "norm"  # attribute of the decoder body
    attention_output: str = "self_attn.o_proj"  # within a block: the projection of the merged heads
    mask_per_layer_type: bool = False  # the decoder takes {"full_attention": mask, "sliding_attention": mask}
    lora_targets: tuple[str, ...] = ()  # where peft has no default for the family


FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("llama", "LLaMA (Llama 2, Llama 3, SmolLM2)"),
    Family("mistral", "Mistral"),
    Family("mixtral", "Mixtral"),
    Family("qwen2", "Qwen 2 / 2.5", mask_per_layer_type=True),
    Family("qwen2_moe", "Qwen2-MoE", mask_per_layer_type=True, lora_targets=("q_proj", "v_proj")),
    Family("qwen3", "Qwen 3", mask_per_layer_type=True),
    Family("qwen3_moe", "Qwen3-MoE", lora_targets=("q_proj", "v_proj")),
    Family("gemma", "Gemma"),
    Family("gemma2", "Gemma 2", mask_per_layer_type=True),
    Family("gemma3_text", "Gemma 3 (text)", mask_per_layer_type=True),
    Family("phi3", "Phi-3", lora_targets=("qkv_proj",)),
    Family("olmo2", "OLMo 2", lora_targets=("q_proj", "v_proj")),
    Family("granite", "Granite", lora_targets=("q_proj", "v_proj")),
    Family("cohere", "Cohere (Command R)", lora_targets=("q_proj", "v_proj")),
    Family("stablelm", "StableLM"),
    Family("starcoder2", "StarCoder2", lora_targets=("q_proj", "v_proj")),
    Family("falcon", "Falcon", final_norm="ln_f", attention_output="self_attention.dense"),
    Family("gpt_neox", "GPT-NeoX (Pythia)", final_norm="final_layer_norm", attention_output="attention.dense"),
    Family("gpt2", "GPT-2", final_norm="ln_f", attention_output="attn.c_proj"),
    Family("olmo", "OLMo", lora_targets=("q_proj", "v_proj")),
    Family("olmo3", "Olmo 3", mask_per_layer_type=True, lora_targets=("q_proj", "v_proj")),
    Family("smollm3", "SmolLM3", lora_targets=("q_proj", "v_proj")),
    Family("phi", "Phi (1, 1.5, 2)", final_norm="final_layernorm", attention_output="self_attn.dense"),
    Family("glm", "GLM", lora_targets=("q_proj", "v_proj")),
    Family("glm4", "GLM-4", lora_targets=("q_proj", "v_proj")),
    Family("cohere2", "Cohere 2 (Command R7B)", mask_per_layer_type=True, lora_targets=("q_proj", "v_proj")),
    Family("exaone4", "EXAONE 4", mask_per_layer_type=True, lora_targets=("q_proj", "v_proj")),
    Family("nemotron", "Nemotron", lora_targets=("q_proj", "v_proj")),
    Family("gpt_oss", "gpt-oss", mask_per_layer_type=True, lora_targets=("q_proj", "v_proj")),
    Family("deepseek_v3", "DeepSeek-V3", lora_targets=("q_proj", "kv_a_proj_with_mqa")),
    Family("gptj", "GPT-J", final_norm="ln_f", attention_output="attn.out_proj"),
    Family("gpt_bigcode", "StarCoder (GPTBigCode)", final_norm="ln_f", attention_output="attn.c_proj"),
    Family("opt", "OPT", final_norm="final_layer_norm", attention_output="self_attn.out_proj"),
)}


def _projected_embeddings(config) -> str | None:
    embeddings = getattr(config, "word_embed_proj_dim", None) or config.hidden_size
    if embeddings == config.hidden_size:
        return None
    return (f"OPT with {embeddings}-wide embeddings projected to its width {config.hidden_size} (OPT-350m's shape) "
            "is not supported: the head reads a projection of the final norm, not the final norm")


# Shapes of a supported family that are not: a one-line reason
UNSUPPORTED_SHAPES = {"opt": _projected_embeddings}


def family_of(config, source: str = "model") -> Family:
    """The family of a transformers config, or a one-line refusal naming the supported ones."""
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(model_type)
    if family is None:
        raise UserError(f"{source}: model type {model_type!r} is not supported (supported: {', '.join(FAMILIES)})")
    problem = UNSUPPORTED_SHAPES[model_type](config) if model_type in UNSUPPORTED_SHAPES else None
    if problem:
        raise UserError(f"{source}: {problem}")
    return family


def lora_targets(config) -> tuple[str, ...]:
    """The modules LoRA adapts by default: peft's choice for the family, else the family's own."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    family = family_of(config)
    return tuple(PEFT_DEFAULTS.get(family.model_type) or family.lora_targets)


def sliding_layers(config) -> tuple[bool, ...]:
    """Per block, whether its attention only sees a window of the latest ``config.sliding_window``
    positions (``config.layer_types`` where the family has it, else every block when a window is set)."""
    n_blocks = config.num_hidden_layers
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return tuple(kind == "sliding_attention" for kind in layer_types)
    return (bool(getattr(config, "sliding_window", None)),) * n_blocks
