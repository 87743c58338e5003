"""Where a command's model goes: the settings every config of a command that loads a model shares
(documented fields, so they are the commands' options; see common/settings.py). Light on purpose:
the command line reads it without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from common.settings import setting

Quantization = Literal["none", "8bit", "4bit"]
QUANTIZATIONS = get_args(Quantization)
QUANTIZE_HELP = "bitsandbytes weights: 8bit (LLM.int8) or 4bit (NF4, double quantization)."
Attention = Literal["auto", "sdpa", "eager", "flex_attention"]
ATTENTIONS = get_args(Attention)
ATTENTION_HELP = ("The model's attention implementation (transformers'). auto: the family's own (sdpa where it has "
                  "it, else eager) on CPUs, where masked sdpa was measured faster than flex attention; on one CUDA "
                  "GPU, flex_attention where triton and the family have it, except for commands that train (their "
                  "backward through flex attention is not checked here).")


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where a command's model goes and how it attends, shared by every config of a command that loads one
    (see ModelSpec)."""

    device_map: str | None = setting(None, "One device (cpu, cuda:N), or a placement over several: auto, balanced, "
                                           "sequential (accelerate; default: the one device, cuda when available).")
    max_memory: str | None = setting(None, "Memory per device for a placement, e.g. 0=70GiB,1=70GiB,cpu=200GiB "
                                           "(implies --device-map auto).")
    offload_dir: str | None = setting(None, "Directory for weights that fit nowhere in --max-memory (disk offload; "
                                            "implies --device-map auto).")
    attention: Attention = setting("auto", ATTENTION_HELP)


@dataclass(frozen=True, kw_only=True)
class QuantizedPlacement(Placement):
    quantize: Quantization = setting("none", QUANTIZE_HELP)
