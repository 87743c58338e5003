"""Each (prompt, continuation) row run as one sequence: the forward pass gradient checkpointing needs.

``shared_prompts.run_shared`` runs a prompt once and its continuations on its key/value cache;
a checkpointed block is recomputed in the backward pass, which cannot replay a cache it has
written, so with checkpointing on each row runs its whole sequence instead (same batch, same
``SharedOutput``: equal up to float rounding, more compute per pair, far less memory).
"""

from __future__ import annotations

import torch

from actstore.attention_masks import decoder_attention_mask
from actstore.batching import position_ids_from_mask
from finetune.shared_prompts import SharedOutput


def run_full_sequences(
    body: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    continuation_ids: torch.Tensor,
    continuation_mask: torch.Tensor,
    group: torch.Tensor,
    *,
    prefix_embeds: torch.Tensor | None = None,
) -> SharedOutput:
    """Rows ``prefix + prompt[group] + continuation`` (padding between them masked), no cache."""
    mask = torch.cat([prompt_mask[group], continuation_mask], dim=1)
    embeds = body.get_input_embeddings()(torch.cat([prompt_ids[group], continuation_ids], dim=1))
    if prefix_embeds is not None:
        embeds = torch.cat([prefix_embeds[group], embeds.to(prefix_embeds.dtype)], dim=1)
        mask = torch.cat([mask.new_ones(prefix_embeds[group].shape[:2]), mask], dim=1)
    position_ids = position_ids_from_mask(mask)
    attention_mask = decoder_attention_mask(body.config, mask, position_ids, mask.shape[1], body.dtype)
    hidden = body(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=False).last_hidden_state
    width = continuation_ids.shape[1]
    return SharedOutput(hidden[:, hidden.shape[1] - width:], continuation_mask.to(hidden.device))
