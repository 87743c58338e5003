"""Attention masks over real token positions, for rows with padding between their tokens.

The prefix tree and the shared-prompt training pass put a row's tokens after the padding of the
rows above (the prompt's, then each level's). Full attention does not care: transformers' own
causal mask over cache slots, with the padding masked, sees exactly the tokens before each one.
A sliding window does: transformers measures the window in slots, so padding in between would
push real tokens out of it. For a model with sliding-window layers the masks are built here
from each slot's real position: a key is seen when it is a real token, at a position no later
than the query's, and (sliding layers) within transformers' own ``sliding_window_overlay`` of it,
in the format of the model's attention implementation (transformers' mask interface).
"""

from __future__ import annotations

import torch

from common import UserError
from actstore.families import family_of, sliding_layers

MASKED_IMPLEMENTATIONS = ("sdpa", "eager")  # take a 4D mask as given (flash attention reads only padding)


def has_sliding_window(config) -> bool:
    return any(sliding_layers(config))


def new_cache():
    """A key/value cache that keeps every token in every layer (never a sliding layer's truncation,
    which counts cache slots, padding included): the masks choose what each layer sees."""
    from transformers import DynamicCache

    return DynamicCache()


def decoder_attention_mask(config, padding_mask: torch.Tensor, positions: torch.Tensor, q_length: int,
                           dtype: torch.dtype) -> torch.Tensor | dict[str, torch.Tensor]:
    """The ``attention_mask`` argument of the decoder for a pass of ``q_length`` new tokens over
    ``padding_mask.shape[1]`` slots (cache first): ``padding_mask`` (rows, slots) 1 for real tokens,
    ``positions`` (rows, slots) each slot's position in its sequence. Without sliding-window layers,
    ``padding_mask`` itself (transformers' own causal mask is then exact)."""
    if not has_sliding_window(config):
        return padding_mask
    if config._attn_implementation not in MASKED_IMPLEMENTATIONS:
        raise UserError(f"{config.model_type}: a sliding-window model under attention implementation "
                        f"{config._attn_implementation!r} cannot take masks by real position; load it with "
                        f"attn_implementation='sdpa' or 'eager'")
    window = config.sliding_window
    kinds = set(zip(sliding_layers(config), getattr(config, "layer_types", None) or [None] * config.num_hidden_layers))
    masks = {kind: _mask(config, padding_mask, positions, q_length, dtype, window if sliding else None)
             for sliding, kind in kinds}
    if family_of(config).mask_per_layer_type:
        return masks
    if len(masks) > 1:
        raise RuntimeError(f"{config.model_type}: layers of several attention types, but the decoder takes one mask")
    return next(iter(masks.values()))


def _mask(config, padding_mask: torch.Tensor, positions: torch.Tensor, q_length: int, dtype: torch.dtype,
          window: int | None) -> torch.Tensor:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sliding_window_overlay

    in_window = sliding_window_overlay(window) if window else None

    def real_positions(batch, head, q, kv):
        query, key = positions[batch, q], positions[batch, kv]
        seen = key <= query
        return seen & in_window(batch, head, query, key) if in_window else seen

    rows, slots = padding_mask.shape
    build = ALL_MASK_ATTENTION_FUNCTIONS[config._attn_implementation]
    return build(batch_size=rows, q_length=q_length, kv_length=slots, q_offset=slots - q_length, kv_offset=0,
                 mask_function=real_positions, attention_mask=padding_mask.bool(), allow_is_causal_skip=False,
                 dtype=dtype, config=config, use_vmap=False, device=padding_mask.device)
