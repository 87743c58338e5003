"""Shared-prompt reuse: the responses of one example share its prompt, so run the prompt once.

A batch of examples runs in two steps. The prompt pass encodes each distinct prompt once and
keeps its keys and values (a ``DynamicCache``); then the responses of those examples, sorted by
length into batches of their own (so short responses are not padded to the prompts' length),
each run on a copy of the cache with one row per response, at positions that continue the
prompt's. Activations at a response's last token and its log-likelihood are those
of the whole sequence, as attention sees exactly the same keys and values.

Several views of one split (plain, yes, no, stim) share every prompt token, so one prompt pass
serves the responses of all of them.

The log-likelihood's first token is predicted from the prompt's last hidden state, which only
the prompt pass has; the others from the response pass.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import numpy as np
import torch

from actstore.batching import EncodedSequence, pad_batch, plan_batches, position_ids_from_mask
from actstore.capture import DecoderParts, LastTokenCapture, StopForward
from actstore.forward import BatchActivations, Float32Head, continuation_positions, token_logprobs
from actstore.stage_clock import StageClock


def reuses_prompts(requested: bool | None, device: str) -> bool:
    """``None`` (the default) turns reuse on where it was measured to help: on CPUs, where the time
    is the tokens' arithmetic (1.4-2x, benchmarks/RESULTS.md). On GPUs a small model's passes are
    bound by kernel launches, not arithmetic, and reuse's extra, smaller passes made SmolLM2-135M
    2-3x slower on an H200; ``--prompt-reuse`` turns it on there for models large enough to gain."""
    if requested is not None:
        return requested
    return torch.device(device).type == "cpu"


@dataclass(frozen=True)
class PromptGroup:
    prompt_ids: tuple[int, ...]
    members: tuple[int, ...]  # indices (in the block) of the sequences that continue this prompt


def group_by_prompt(sequences: Sequence[EncodedSequence]) -> list[PromptGroup]:
    """Runs of consecutive sequences with the same prompt (one example's responses, in store order)."""
    groups: list[PromptGroup] = []
    start = 0
    for index in range(1, len(sequences) + 1):
        if index == len(sequences) or sequences[index].prompt_ids != sequences[start].prompt_ids:
            members = tuple(range(start, index))
            if any(not sequences[i].continuation_ids for i in members):
                raise ValueError("prompt reuse needs at least one continuation token per sequence")
            groups.append(PromptGroup(sequences[start].prompt_ids, members))
            start = index
    return groups


def plan_group_batches(groups: Sequence[PromptGroup], batch_tokens: int) -> list[list[int]]:
    """Group indices of the prompt passes: prompts sorted by length, rows x longest prompt within
    ``batch_tokens`` (a prompt longer than that runs alone)."""
    return plan_batches([len(group.prompt_ids) for group in groups], batch_tokens)


def plan_continuation_batches(continuation_lengths: Sequence[int], prompt_width: int, batch_tokens: int) -> list[list[int]]:
    """Rows of the response passes over one prompt pass: sorted by response length, each row
    counting its cached prompt width too, so that the repeated cache stays within the budget."""
    return plan_batches([prompt_width + n for n in continuation_lengths], batch_tokens)


@dataclass(frozen=True)
class Responses:
    """One view's sequences over the block's prompts, and the capture (not entered) its passes read."""

    key: str
    sequences: Sequence[EncodedSequence]
    capture: LastTokenCapture
    with_loglik: bool
    clock: StageClock


def run_groups(parts: DecoderParts, groups: Sequence[PromptGroup], views: Sequence[Responses], *, pad_id: int,
               batch_tokens: int, padding_side: str,
               prompt_clock: StageClock) -> Iterator[tuple[str, list[int], BatchActivations]]:
    """(view key, block indices, their activations) for each response pass, prompt passes in between.

    Each prompt pass serves every view: the views' sequences share their prompts (``encode``
    tokenizes the prompt alone). Each view's response passes are planned exactly as if it were the
    only view, so its values do not depend on which other views ran beside it.
    """
    prompt_capture = min((view.capture for view in views), key=_depth_order)  # runs as deep as any view needs
    with_loglik = any(view.with_loglik for view in views)
    for batch in plan_group_batches(groups, batch_tokens):
        chosen = [groups[g] for g in batch]
        with prompt_capture:
            prompt = run_prompt_pass(parts, prompt_capture, chosen, pad_id=pad_id, padding_side=padding_side,
                                     with_loglik=with_loglik, clock=prompt_clock)
        members = [(g, i) for g, group in enumerate(chosen) for i in group.members]
        for view in views:
            view_prompt = prompt if view.with_loglik else replace(prompt, last_hidden=None)
            lengths = [len(view.sequences[i].continuation_ids) for _, i in members]
            with view.capture:
                for rows in plan_continuation_batches(lengths, prompt.width, batch_tokens):
                    group_of_row = [members[r][0] for r in rows]
                    indices = [members[r][1] for r in rows]
                    yield view.key, indices, run_continuation_pass(
                        parts, view.capture, view_prompt, group_of_row, [view.sequences[i] for i in indices],
                        pad_id=pad_id, padding_side=padding_side, clock=view.clock)


def _depth_order(capture: LastTokenCapture) -> tuple[int, int]:
    stop = capture.plan.stop_after
    return (0, 0) if stop is None else (1, -stop)


@dataclass(frozen=True)
class PromptPass:
    cache: object  # DynamicCache of the prompts, one row per group, never extended
    mask: torch.Tensor  # (groups, width) attention mask of the padded prompts
    lengths: torch.Tensor  # (groups,) real prompt tokens
    last_hidden: torch.Tensor | None  # (groups, hidden) final hidden state at the prompt's last token

    @property
    def width(self) -> int:
        return self.mask.shape[1]


def run_prompt_pass(parts: DecoderParts, capture: LastTokenCapture, groups: Sequence[PromptGroup], *, pad_id: int,
                    padding_side: str, with_loglik: bool, clock: StageClock) -> PromptPass:
    from transformers import DynamicCache

    device = parts.input_device
    prompts = pad_batch([EncodedSequence(g.prompt_ids, ()) for g in groups], pad_id, padding_side)
    mask = prompts.attention_mask.to(device)
    last = prompts.last_positions.to(device)
    cache = DynamicCache(config=parts.body.config)
    capture.begin(last)  # what the hooks read here is discarded
    with clock.stage("forward"):
        output = _run(parts.body, input_ids=prompts.input_ids.to(device), attention_mask=mask,
                      position_ids=prompts.position_ids.to(device), use_cache=True, **{cache_argument(parts.body): cache})
    last_hidden = None
    if with_loglik:
        if output is None:
            raise RuntimeError("the log-likelihood needs the full forward pass; the capture plan stopped early")
        last_hidden = output.last_hidden_state[torch.arange(len(groups), device=device), last]
    return PromptPass(cache, mask, prompts.lengths.to(device), last_hidden)


def run_continuation_pass(parts: DecoderParts, capture: LastTokenCapture, prompt: PromptPass, group_of_row: list[int],
                          sequences: Sequence[EncodedSequence], *, pad_id: int, padding_side: str,
                          clock: StageClock) -> BatchActivations:
    """The responses ``sequences`` (row r continues prompt ``group_of_row[r]``) on the prompts' cache."""
    device = parts.input_device
    groups = torch.tensor(group_of_row, device=device)
    continuations = pad_batch([EncodedSequence((), s.continuation_ids) for s in sequences], pad_id, padding_side)
    continuation_ids = continuations.input_ids.to(device)
    continuation_mask = continuations.attention_mask.to(device)
    positions = prompt.lengths[groups][:, None] + position_ids_from_mask(continuation_mask)
    capture.begin(continuations.last_positions.to(device))
    with clock.stage("forward"):
        output = _run(parts.body, input_ids=continuation_ids,
                      attention_mask=torch.cat([prompt.mask[groups], continuation_mask], dim=1),
                      position_ids=positions, use_cache=True,
                      **{cache_argument(parts.body): repeat_rows(prompt.cache, groups, parts.body.config)})
    with clock.stage("gather"):
        loglik = None
        if prompt.last_hidden is not None:
            loglik = loglik_after_prompt(output.last_hidden_state, prompt.last_hidden[groups], continuation_ids,
                                         continuations.offsets.to(device), continuations.lengths.to(device),
                                         parts.loglik_head).cpu().numpy()
        plan, captured = capture.plan, capture.captured
        return BatchActivations(
            residual=torch.stack([captured.residual[layer] for layer in plan.layers]).cpu().numpy(),
            n_tokens=np.array([s.n_tokens for s in sequences], dtype=np.int32),
            last_token=np.array([s.continuation_ids[-1] for s in sequences], dtype=np.int32),
            final_norm=captured.final_norm.cpu().numpy() if plan.final_norm else None,
            heads=torch.stack([captured.heads[layer] for layer in plan.head_layers]).cpu().numpy()
            if plan.head_layers else None,
            loglik=loglik,
        )


def repeat_rows(cache, rows: torch.Tensor, config):
    """A new cache whose row r is ``cache``'s row ``rows[r]`` (layers the prompt pass never reached stay empty)."""
    from transformers import DynamicCache

    repeated = DynamicCache(config=config)
    for index, layer in enumerate(cache.layers):
        if layer.get_seq_length() > 0:
            repeated.update(layer.keys[rows], layer.values[rows], index)
    return repeated


def cache_argument(body: torch.nn.Module) -> str:
    """The keyword of the key/value cache: ``cache`` in recent transformers, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def _run(body: torch.nn.Module, **inputs):
    try:
        return body(**inputs)
    except StopForward:  # the cache holds the layers that ran, all that the response pass will run
        return None


def loglik_after_prompt(continuation_hidden: torch.Tensor, prompt_last_hidden: torch.Tensor,
                        continuation_ids: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor,
                        head: Float32Head) -> torch.Tensor:
    """Per row, sum_t log p(continuation token t | prompt, tokens before t), float64: token 0 from the
    prompt's last hidden state (``prompt_last_hidden``, one per row), token t > 0 from continuation
    position t - 1. ``offsets``: each row's first real column (0 for right padding). The store's
    log-likelihood and live zero-shot (finetune.baselines) both come from here."""
    rows, columns = continuation_positions(offsets, torch.zeros_like(lengths), lengths)
    first = columns == offsets[rows]
    hidden = torch.where(first[:, None], prompt_last_hidden[rows], continuation_hidden[rows, (columns - 1).clamp(min=0)])
    totals = torch.zeros(len(lengths), dtype=torch.float64, device=hidden.device)
    return totals.index_add_(0, rows, token_logprobs(hidden, continuation_ids[rows, columns], head))
