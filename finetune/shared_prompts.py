"""One forward pass per prompt, shared by all of its responses (key/value reuse).

The responses of an example differ only after the prompt, so the prompt is run once, its keys
and values are copied to one row per response, and only the continuations (response + EOS)
are run on top. The result equals running each full sequence (up to float rounding): the
continuation sees the prompt's real tokens at positions 0..n-1 and itself after them.
Gradients flow through the shared keys and values, so training uses it too. For the demo data
(long prompt, short answers) this halves the cost of a training pair and divides evaluation
by about the number of responses.

A batch is a dict of tensors (so accelerate can move it): prompts right-padded, continuations
right-padded, and ``group`` = the prompt row of each continuation row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from actstore.attention_masks import decoder_attention_mask, new_cache
from actstore.batching import EncodedSequence, pad_batch, position_ids_from_mask
from actstore.prompt_reuse import cache_argument, group_by_prompt
from finetune.sequences import TokenSequence


@dataclass(frozen=True)
class SharedOutput:
    continuation_hidden: torch.Tensor  # (C, Lc, d)
    continuation_mask: torch.Tensor  # (C, Lc)

    def last_hidden(self) -> torch.Tensor:
        """Final hidden state at the last real token of each continuation (the EOS)."""
        last = self.continuation_mask.sum(dim=1) - 1
        rows = torch.arange(len(last), device=last.device)
        return self.continuation_hidden[rows, last]


def collate_groups(groups: Sequence[Sequence[TokenSequence]], pad_id: int) -> dict[str, torch.Tensor]:
    """Sequences that share a prompt, group by group -> one batch; rows keep the order given."""
    prompts, continuations, group = [], [], []
    for g, sequences in enumerate(groups):
        prompt = sequences[0].prompt_ids
        if any(s.prompt_ids != prompt for s in sequences):
            raise ValueError("a group's sequences must share their prompt")
        prompts.append(prompt)
        for s in sequences:
            continuations.append(s.continuation_ids)
            group.append(g)
    # Right padding keeps positions 0..n-1 for every real token: a sequence scores the same
    # whatever it is batched with.
    prompt_batch = pad_batch([EncodedSequence(p, ()) for p in prompts], pad_id)
    continuation_batch = pad_batch([EncodedSequence((), c) for c in continuations], pad_id)
    return {
        "prompt_ids": prompt_batch.input_ids,
        "prompt_mask": prompt_batch.attention_mask,
        "continuation_ids": continuation_batch.input_ids,
        "continuation_mask": continuation_batch.attention_mask,
        "group": torch.tensor(group, dtype=torch.long),
    }


def run_shared(
    body: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    continuation_ids: torch.Tensor,
    continuation_mask: torch.Tensor,
    group: torch.Tensor,
    *,
    prefix_embeds: torch.Tensor | None = None,
) -> SharedOutput:
    """Run the decoder ``body`` on the prompts, then on every continuation over its prompt's cache.

    ``prefix_embeds`` (prompts, n, d) are put in front of each prompt (prompt tuning).
    """
    cache_keyword = cache_argument(body)
    cache = new_cache()
    if prefix_embeds is None:
        inputs = {"input_ids": prompt_ids}
    else:
        embeds = torch.cat([prefix_embeds, body.get_input_embeddings()(prompt_ids).to(prefix_embeds.dtype)], dim=1)
        prompt_mask = torch.cat([prompt_mask.new_ones(prefix_embeds.shape[:2]), prompt_mask], dim=1)
        inputs = {"inputs_embeds": embeds}
    prompt_positions = position_ids_from_mask(prompt_mask)
    body(**inputs, attention_mask=prompt_mask, position_ids=prompt_positions, use_cache=True, **{cache_keyword: cache})
    prompt_lengths = prompt_mask.sum(dim=1)
    cache.batch_select_indices(group)
    width = continuation_ids.shape[1]
    position_ids = prompt_lengths[group][:, None] + torch.arange(width, device=continuation_ids.device)
    padding = torch.cat([prompt_mask[group], continuation_mask], dim=1)
    positions = torch.cat([prompt_positions[group], position_ids], dim=1)
    second = body(
        input_ids=continuation_ids,
        attention_mask=decoder_attention_mask(body.config, padding, positions, width, body.dtype),
        position_ids=position_ids,
        use_cache=True,
        **{cache_keyword: cache},
    )
    return SharedOutput(second.last_hidden_state, continuation_mask)


def score_grouped(
    sequences: Sequence[TokenSequence],
    batch_size: int,
    score_batch: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    pad_id: int,
) -> np.ndarray:
    """One float per sequence, in the order given; whole prompt groups, about ``batch_size``
    sequences per forward pass, groups of similar length together."""
    groups = [list(group.members) for group in group_by_prompt(sequences)]  # one example's responses each
    order = sorted(range(len(groups)), key=lambda g: (max(sequences[i].n_tokens for i in groups[g]), g))
    scores = np.empty(len(sequences), dtype=np.float64)
    batch: list[int] = []
    for position, g in enumerate(order):
        batch.append(g)
        if sum(len(groups[b]) for b in batch) >= batch_size or position == len(order) - 1:
            rows = [i for b in batch for i in groups[b]]
            collated = collate_groups([[sequences[i] for i in groups[b]] for b in batch], pad_id)
            scores[rows] = score_batch(collated).double().cpu().numpy()
            batch = []
    return scores
