"""One forward pass over a padded batch: last-token activations and continuation log-likelihoods."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from actstore.engine.batching import PaddedBatch
from actstore.engine.capture import DecoderParts, HostCaptured, LastTokenCapture, StopForward
from actstore.engine.logits import ModelLogits
from actstore.engine.stage_clock import StageClock

# Rows of LM-head logits computed at once: bounds the (rows, vocab) float32 block to 64 MB (341 rows of a
# 49k vocabulary, 64 of a 262k one). Every chunk reads the whole head: fewer, larger chunks read it fewer times.
LOGIT_ELEMENTS_PER_CHUNK = 1 << 24


@dataclass(frozen=True)
class BatchActivations:
    residual: np.ndarray  # (n_layers, batch, hidden) float32, layers as in the capture plan
    n_tokens: np.ndarray  # (batch,) int32
    last_token: np.ndarray  # (batch,) int32
    final_norm: np.ndarray | None = None  # (batch, hidden)
    heads: np.ndarray | None = None  # (n_head_layers, batch, n_heads, head_dim)
    loglik: np.ndarray | None = None  # (batch,) float64


def run_batch(parts: DecoderParts, capture: LastTokenCapture, batch: PaddedBatch, *, with_loglik: bool,
              clock: StageClock | None = None) -> BatchActivations:
    """Run the decoder on ``batch`` (inside ``capture``'s hooks) and collect what the plan asks for."""
    clock = clock or StageClock()
    device = parts.input_device
    input_ids = batch.input_ids.to(device)
    mask = batch.attention_mask.to(device)
    last = batch.last_positions.to(device)
    capture.begin(last)
    with clock.stage("forward"):
        try:
            output = parts.body(input_ids=input_ids, attention_mask=mask, position_ids=batch.position_ids.to(device),
                                use_cache=False)
        except StopForward:
            output = None
    with clock.stage("gather"):
        loglik = None
        if with_loglik:
            if output is None:
                raise RuntimeError("the log-likelihood needs the full forward pass; the capture plan stopped early")
            loglik = continuation_loglik(output.last_hidden_state.to(device), input_ids, batch.offsets,
                                         batch.prompt_lengths, batch.lengths, parts.loglik_head)
        return collect(capture, batch, loglik)


def collect(capture: LastTokenCapture, batch: PaddedBatch, loglik: np.ndarray | None) -> BatchActivations:
    """The captured activations of one pass, on the host (one copy), with the per-sequence facts of ``batch``."""
    plan, host = capture.plan, HostCaptured.of(capture.captured)
    last = batch.last_positions
    return BatchActivations(
        residual=host.residual[[host.layers.index(layer) for layer in plan.layers]],
        n_tokens=batch.lengths.numpy().astype(np.int32),
        last_token=batch.input_ids[torch.arange(len(last)), batch.last_positions].numpy().astype(np.int32),
        final_norm=host.final_norm if plan.final_norm else None,
        heads=host.heads[[host.head_layers.index(layer) for layer in plan.head_layers]] if plan.head_layers else None,
        loglik=loglik,
    )


def continuation_loglik(final_hidden: torch.Tensor, input_ids: torch.Tensor, offsets: torch.Tensor,
                        prompt_lengths: torch.Tensor, lengths: torch.Tensor, head: ModelLogits) -> np.ndarray:
    """Sum over continuation tokens of log p(token | everything before it), per row.

    The token at column ``c`` is predicted from the hidden state at ``c - 1``; only those
    hidden states are gathered and sent through the LM head (in chunks), never every position.
    ``offsets``, ``prompt_lengths`` and ``lengths`` are the batch's, on the host: where the continuation
    tokens lie is planned there, without waiting for the device.
    """
    rows, predicted_columns = (t.to(final_hidden.device) for t in continuation_positions(offsets, prompt_lengths, lengths))
    hidden = final_hidden[rows, predicted_columns - 1]
    targets = input_ids[rows, predicted_columns]
    return summed_token_logprobs(hidden, targets, rows, len(lengths), head)


def token_logprobs(hidden: torch.Tensor, targets: torch.Tensor, head: ModelLogits) -> torch.Tensor:
    """log p(target) from the final hidden state that predicts it, float32 log-softmax of the model's
    own logits, float64 out."""
    out = torch.empty(len(targets), dtype=torch.float64, device=hidden.device)
    chunk = max(1, LOGIT_ELEMENTS_PER_CHUNK // head.vocab_size)
    for start in range(0, len(targets), chunk):
        logits = head(hidden[start:start + chunk])
        picked = logits.gather(1, targets[start:start + chunk, None])[:, 0]
        out[start:start + chunk] = (picked - torch.logsumexp(logits, dim=1)).double()
    return out


def summed_token_logprobs(hidden: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, n_rows: int,
                          head: ModelLogits) -> np.ndarray:
    """Per row, the sum of log p(target) from the final hidden state that predicts it."""
    totals = torch.zeros(n_rows, dtype=torch.float64, device=hidden.device)
    totals.index_add_(0, rows, token_logprobs(hidden, targets, head))
    return totals.cpu().numpy()


def continuation_positions(offsets: torch.Tensor, prompt_lengths: torch.Tensor,
                           lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of every continuation token in a padded batch, row-major, planned on the host (the batch's
    own tensors, before they go to the device)."""
    offsets, prompt_lengths, lengths = (np.asarray(t.numpy(), dtype=np.int64) for t in (offsets, prompt_lengths, lengths))
    counts = lengths - prompt_lengths
    rows = np.repeat(np.arange(len(lengths)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    columns = np.repeat(offsets + prompt_lengths, counts) + np.arange(int(counts.sum())) - starts
    return torch.from_numpy(rows), torch.from_numpy(columns)
