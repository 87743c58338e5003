"""Which attention implementation a loaded model runs (``--attention``).

``auto`` keeps the family's own (transformers' default: sdpa where the family has it, else eager)
on CPUs, where dense masked sdpa was measured faster than flex attention (benchmarks/RESULTS.md).
On one CUDA GPU, for commands that only run the model forward with prefix-tree masks (prompt reuse, the
default), it takes flex attention where triton and the family have it: its block masks skip the blocks
a prefix tree's mask leaves out; with no tree masks there is nothing to skip and its compiles would be
paid for nothing. Commands that train keep the family's own, because torch has no flex attention
backward on the CPU, so the gradients through it could not be checked against transformers' here; so
does a model placed over several GPUs, which was not run under it (and ``flex_attention`` asked for
there is refused: its block masks are built on one device).
"""

from __future__ import annotations

import torch

from common import UserError
from actstore.models.placement import ATTENTIONS
from actstore.models.quiet import transformers_errors_only

# torch compiles flex attention (and its block masks) once per mask function (sliding and full layers,
# prefix trees and plain passes) and per shape specialization. Past dynamo's default of 8 it runs the
# rest uncompiled, materializing every score: one Gemma 3 extraction reached it within its first passes.
FLEX_RECOMPILE_LIMIT = 64


def check_attention(requested: str, device: str, *, trains: bool, several_gpus: bool = False) -> None:
    """Refuse, in one line, an ``--attention`` choice that cannot run where it was asked for."""
    if requested not in ATTENTIONS:
        raise UserError(f"unknown --attention {requested!r} (choose {', '.join(ATTENTIONS)})")
    if requested == "flex_attention" and several_gpus:
        raise UserError("--attention flex_attention cannot serve a model placed over several GPUs (its block masks "
                        "are built on one device); use --attention auto, sdpa or eager")
    if requested == "flex_attention" and trains and torch.device(device).type != "cuda":
        raise UserError(f"--attention flex_attention cannot train on {device}: torch has no flex attention backward "
                        "off CUDA; train with --attention auto, sdpa or eager")


def wanted_attention(requested: str, device: str, *, trains: bool, several_gpus: bool = False,
                     tree_masks: bool = True) -> str | None:
    """The implementation to set on a model loaded for ``device``; None keeps the family's own.
    ``several_gpus``: the model is placed over several, which was never run under flex attention
    (its block masks are built on the first); ``tree_masks``: its passes carry prefix-tree masks."""
    check_attention(requested, device, trains=trains, several_gpus=several_gpus)
    if requested != "auto":
        return requested
    if (torch.device(device).type == "cuda" and not trains and not several_gpus and tree_masks
            and flex_attention_available()):
        return "flex_attention"
    return None


def flex_attention_available() -> bool:
    """Whether this torch can compile flex attention's kernels for a GPU (transformers' check, and triton)."""
    from torch.utils._triton import has_triton
    from transformers.utils import is_torch_flex_attn_available

    return is_torch_flex_attn_available() and has_triton()


def attention_sinks(model) -> bool:
    """Whether the model's attention has learned sinks (gpt-oss). Flex attention runs them on GPUs only, and the
    tree under it has not been checked there against transformers' forward: it is refused on every device."""
    return any(getattr(module, "sinks", None) is not None for module in model.modules())


def set_attention(model, name: str, requested: str, device: str, *, trains: bool, several_gpus: bool = False,
                  tree_masks: bool = True) -> str:
    """Switch ``model`` (loaded in its family's own implementation) to the one ``requested`` resolves to,
    and return the implementation it runs. ``auto`` falls back to the family's own where the family lacks
    flex attention; a choice given explicitly that the model cannot take is refused in one line."""
    wanted = wanted_attention(requested, device, trains=trains, several_gpus=several_gpus, tree_masks=tree_masks)
    if wanted == "flex_attention" and attention_sinks(model):
        if requested != "auto":
            raise UserError(f"{name}: --attention flex_attention is not available for {type(model).__name__} "
                            "(its attention sinks under flex attention are not checked against transformers' "
                            "forward); use the family's own attention (--attention auto)")
        wanted = None
    if wanted is not None and wanted != model.config._attn_implementation:
        try:
            with transformers_errors_only():  # the refusal below is our one line
                model.set_attn_implementation(wanted)
            reason = "its attention cannot be switched after loading"  # (Falcon) transformers only warns
        except (ValueError, ImportError) as error:
            reason = str(error).strip().splitlines()[0]
        if model.config._attn_implementation != wanted and requested != "auto":
            raise UserError(f"{name}: --attention {wanted} is not available for {type(model).__name__} "
                            f"({reason})")
    if model.config._attn_implementation == "flex_attention":
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, FLEX_RECOMPILE_LIMIT)
    return model.config._attn_implementation
