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
from actstore.models.families import family_of, sliding_layers

# Take masks built from any mask function: a 4D mask (sdpa, eager) or a block mask (flex attention).
# Flash attention reads only padding.
MASKED_IMPLEMENTATIONS = ("sdpa", "eager", "flex_attention")


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
    _check_masked(config, "a sliding-window model")

    def real_positions(batch, head, q, kv):
        return positions[batch, kv] <= positions[batch, q]

    rows, slots = padding_mask.shape
    return _per_layer_type(config, real_positions, positions, rows=rows, q_length=q_length, kv_length=slots,
                           padding_mask=padding_mask.bool(), dtype=dtype)


def tree_attention_mask(config, subtree_ends: torch.Tensor, positions: torch.Tensor,
                        dtype: torch.dtype) -> torch.Tensor | dict[str, torch.Tensor]:
    """The ``attention_mask`` argument of the decoder for flattened prefix trees (``actstore.engine.tree_rows``):
    slot q sees slot k when k is on its path, ``k <= q < subtree_ends[k]``, and, in sliding-window
    layers, within the window by real position. ``subtree_ends`` and ``positions``: (rows, slots)."""
    _check_masked(config, "prefix-tree attention")

    def on_path(batch, head, q, kv):
        return (kv <= q) & (q < subtree_ends[batch, kv])

    rows, slots = subtree_ends.shape
    return _per_layer_type(config, on_path, positions, rows=rows, q_length=slots, kv_length=slots,
                           padding_mask=None, dtype=dtype)


def takes_tree_masks(config) -> bool:
    return config._attn_implementation in MASKED_IMPLEMENTATIONS


def _check_masked(config, what: str) -> None:
    if not takes_tree_masks(config):
        raise UserError(f"{config.model_type}: {what} under attention implementation "
                        f"{config._attn_implementation!r} cannot take masks by real position; load it with "
                        f"attn_implementation='sdpa', 'eager' or 'flex_attention'")


def _per_layer_type(config, visible, positions: torch.Tensor, **shape) -> torch.Tensor | dict[str, torch.Tensor]:
    """``visible`` as the decoder takes it: one mask, or one per layer type (sliding ones windowed)."""
    kinds = set(zip(sliding_layers(config), getattr(config, "layer_types", None) or [None] * config.num_hidden_layers))
    masks = {kind: _mask(config, visible, positions, config.sliding_window if sliding else None, **shape)
             for sliding, kind in kinds}
    if family_of(config).mask_per_layer_type:
        return masks
    if len(masks) > 1:
        raise RuntimeError(f"{config.model_type}: layers of several attention types, but the decoder takes one mask")
    return next(iter(masks.values()))


def _mask(config, visible, positions: torch.Tensor, window: int | None, *, rows: int, q_length: int,
          kv_length: int, padding_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sliding_window_overlay

    in_window = sliding_window_overlay(window) if window else None

    def mask_function(batch, head, q, kv):
        seen = visible(batch, head, q, kv)
        return seen & in_window(batch, head, positions[batch, q], positions[batch, kv]) if in_window else seen

    build = ALL_MASK_ATTENTION_FUNCTIONS[config._attn_implementation]
    return build(batch_size=rows, q_length=q_length, kv_length=kv_length, q_offset=kv_length - q_length, kv_offset=0,
                 mask_function=mask_function, attention_mask=padding_mask, allow_is_causal_skip=False,
                 dtype=dtype, config=config, use_vmap=False, device=positions.device)
