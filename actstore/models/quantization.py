"""Quantized weights through bitsandbytes: 8-bit (LLM.int8) or 4-bit NF4 with double quantization,
as the original GENIES code loaded its models. Checked before any work: where bitsandbytes is
missing or cannot run on the device, one clear error instead of a failure halfway through a load.
"""

from __future__ import annotations

import importlib
import logging

import torch

from common import UserError

INSTALL = "pip install 'genies-toolkit[quantize]' (bitsandbytes)"


def check_quantization(quantization: str, device: str) -> None:
    """Raise a UserError unless ``quantization`` can run on ``device`` here (a tiny real quantization)."""
    if quantization == "none":
        return
    quiet_bitsandbytes()
    try:
        functional = importlib.import_module("bitsandbytes.functional")
    except ImportError as err:
        raise UserError(f"--quantize {quantization} needs bitsandbytes, which is not importable here ({err}); "
                        f"install it with {INSTALL}") from None
    try:
        probe = torch.ones(64, 64, dtype=torch.bfloat16, device=device)
        if quantization == "4bit":
            functional.quantize_4bit(probe, quant_type="nf4", compress_statistics=True)
        else:
            functional.int8_vectorwise_quant(probe)
    except Exception as err:  # bitsandbytes raises many types for a missing backend
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"--quantize {quantization}: the installed bitsandbytes cannot run on {device} ({reason}); "
                        "use a device it supports (a CUDA GPU) or --quantize none") from None


def quantization_config(quantization: str, compute_dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for ``quantization`` (None for none)."""
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def quiet_bitsandbytes() -> None:
    """bitsandbytes' CPU backend warns on import that an optional faster kernel package (``kernels``,
    fetched from the hub) is absent; its own kernels run without it."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
