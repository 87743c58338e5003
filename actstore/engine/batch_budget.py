"""How many padded tokens one forward pass takes (``--batch-tokens``): 4096 on a CPU, where passes of that
size were measured fastest (benchmarks/RESULTS.md); on a GPU, what the device's free memory holds once the
model is loaded, so that a large GPU runs long passes and a small one does not run out of memory."""

from __future__ import annotations

import torch

CPU_BATCH_TOKENS = 4096
GPU_SHARE = 0.5  # of the free memory a pass's activations may take (the rest: the allocator, the head's chunks)
MAX_BATCH_TOKENS = 1 << 17
ROW_TOKENS = 4096  # a tree row's mask holds one entry per pair of its tokens: rows of up to this many


def bytes_per_token(model_config, dtype_bytes: int, attention: str) -> int:
    """Activation memory one token of a pass holds at the peak of a block: the residual stream, the normed
    input, queries, keys, values and attention output (six widths), the MLP's gate, up and product (three
    intermediate widths), its row of the attention mask, and under eager attention its row of scores per head."""
    hidden = model_config.hidden_size
    intermediate = getattr(model_config, "intermediate_size", None) or 4 * hidden
    per_token = dtype_bytes * (6 * hidden + 3 * intermediate + ROW_TOKENS)
    if attention == "eager":
        per_token += dtype_bytes * model_config.num_attention_heads * ROW_TOKENS
    return per_token


def default_batch_tokens(model: torch.nn.Module, device: torch.device) -> int:
    """The budget for ``model`` computing on ``device`` (rounded down to a multiple of 1024)."""
    if device.type != "cuda":
        return CPU_BATCH_TOKENS
    free, _ = torch.cuda.mem_get_info(device)
    per_token = bytes_per_token(model.config, model.dtype.itemsize, model.config._attn_implementation)
    fits = int(GPU_SHARE * free) // per_token
    return max(1024, min(MAX_BATCH_TOKENS, fits // 1024 * 1024))


def batch_budget(requested: int | None, model: torch.nn.Module, device: torch.device) -> int:
    """``--batch-tokens`` as given, else the device's default."""
    return requested if requested is not None else default_batch_tokens(model, device)
