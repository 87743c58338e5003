"""One forward pass per prompt group, shared by all of its responses (tree attention).

The responses of an example differ only after the prompt, so a group becomes one row: the prompt
once (after prompt tuning's virtual tokens), then each response + EOS, each at the positions
that continue the prompt and seeing only the prompt and itself (``actstore.engine.tree_rows``' mask).
The result equals running each full sequence (up to float rounding). No key/value cache is
carried, so gradients flow through the shared prompt and gradient checkpointing (which
recomputes each block in the backward pass) works on the same pass. For the demo data (long
prompt, short answers) this halves the cost of a training pair and divides evaluation by about
the number of responses.

A batch is a dict of tensors (so accelerate can move it): prompts right-padded, continuations
right-padded, and ``group`` = the prompt row of each continuation row.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from actstore.engine.attention_masks import tree_attention_mask
from actstore.engine.batching import EncodedSequence, pad_batch
from actstore.engine.prefix_tree import ViewSequences, build_forest
from actstore.engine.prompt_reuse import group_by_prompt
from actstore.engine.tree_rows import flatten_group, row_tensors
from finetune.sequences import TokenSequence


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
) -> torch.Tensor:
    """The decoder ``body``'s final hidden state at each continuation's last real token (C, d): one
    row per prompt, its prefix tree flattened (``actstore.engine.tree_rows``: the prompt once, the tokens
    its continuations share once), ``prefix_embeds`` (prompts, n, d) at the row's root (prompt
    tuning)."""
    n_virtual = 0 if prefix_embeds is None else prefix_embeds.shape[1]
    # the rows are planned on the host from one copy of the token ids (not one wait for the device per row)
    ids, id_mask, more_ids, more_mask, rows_of = host_integers([prompt_ids, prompt_mask, continuation_ids,
                                                                continuation_mask, group])
    sequences = [EncodedSequence(tuple(ids[row, :id_mask[row].sum()].tolist()),
                                 tuple(more_ids[index, :more_mask[index].sum()].tolist()))
                 for index, row in enumerate(rows_of.tolist())]
    members = [[index for index, row in enumerate(rows_of.tolist()) if row == g] for g in range(len(prompt_ids))]
    forest = build_forest(members, [ViewSequences("rewards", sequences, with_loglik=False, deep=True)])
    flat = [flatten_group(forest, root) for root in forest.roots]
    rows = row_tensors(flat, [[g] for g in range(len(flat))], pad_id=0, prefix=n_virtual)
    lasts = torch.empty(len(sequences), dtype=torch.long)
    for g, group_row in enumerate(flat):
        for node_id, start in zip(group_row.nodes, group_row.node_starts):
            for _, index in forest.nodes[node_id].ends:
                lasts[index] = rows.offsets[g][0] + start + len(forest.nodes[node_id].tokens) - 1
    device = prompt_ids.device
    positions = rows.positions.to(device)
    embeds = body.get_input_embeddings()(rows.input_ids.to(device))
    if prefix_embeds is not None:
        embeds = torch.cat([prefix_embeds, embeds[:, n_virtual:].to(prefix_embeds.dtype)], dim=1)
    mask = tree_attention_mask(body.config, rows.subtree_ends.to(device), positions, embeds.dtype)
    hidden = body(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
    return hidden[group.to(hidden.device), lasts.to(hidden.device)]


def host_integers(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """Integer tensors of one device as numpy arrays, in one copy to the host."""
    flat = torch.cat([tensor.reshape(-1).long() for tensor in tensors]).cpu().numpy()
    out, start = [], 0
    for tensor in tensors:
        out.append(flat[start:start + tensor.numel()].reshape(tuple(tensor.shape)))
        start += tensor.numel()
    return out


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
