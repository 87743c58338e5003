"""Live zero-shot and few-shot baselines: score = total log-likelihood of response + EOS.

Zero-shot reads exactly the sequences of the ``plain`` view (``actstore.engine.views.encode``), so its
score is the same quantity as the ``loglik`` an activation store records. Few-shot puts
``n_shots`` solved examples from a source's train split in front of the prompt, as the
reference does ("\\n\\n" + shot prompt + best response, for each shot, then "\\n\\n" + prompt);
the shots are drawn per test example from a seed, not unseeded as in the reference.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import torch

from distributions.split_file import Example
from common import UserError
from actstore.engine.capture import DecoderParts
from actstore.engine.prompt_reuse import sequence_logliks
from finetune.evaluate import EvalResult, result_from_scores
from finetune.sequences import PromptBuilder, TokenSequence

DEFAULT_SHOTS = 4


@torch.inference_mode()
def response_logliks(causal_lm, sequences: Sequence[TokenSequence], *, pad_id: int, batch_size: int = 16) -> np.ndarray:
    """sum_t log p(continuation token t | everything before it), one float64 per sequence: the
    extraction's own code (``actstore.engine.prompt_reuse.sequence_logliks``), with passes of about
    ``batch_size`` of the longest sequences."""
    if any(len(s.prompt_ids) == 0 for s in sequences):
        raise UserError("a prompt encodes to no tokens; its response has nothing to be conditioned on")
    if not sequences:
        return np.empty(0, dtype=np.float64)
    causal_lm.eval()
    return sequence_logliks(DecoderParts.of(causal_lm), sequences, pad_id=pad_id,
                            batch_tokens=batch_size * max(s.n_tokens for s in sequences))


def few_shot_prompts(shots: Sequence[Example], *, n_shots: int, seed: int, exclude_self: bool) -> PromptBuilder:
    """A prompt builder: ``n_shots`` solved shots drawn for each test example, then its prompt.

    The draw depends only on (seed, example index), so it does not change with --limit or
    batching. ``exclude_self`` keeps an example out of its own shots (shots from the split
    being evaluated).
    """
    needed = n_shots + (1 if exclude_self else 0)
    if len(shots) < needed:
        raise UserError(f"few-shot needs at least {needed} examples in the shot source, it has {len(shots)}")

    def build(example: Example) -> str:
        rng = random.Random(f"few-shot:{seed}:{example.index}")
        pool = [s for s in shots if not (exclude_self and s.index == example.index)]
        chosen = rng.sample(pool, n_shots)
        prefix = "".join("\n\n" + s.prompt + s.responses[s.best] for s in chosen)
        return prefix + "\n\n" + example.prompt

    return build


def evaluate_loglik_baseline(
    model: str,
    dataset: str,
    *,
    data_dir: str | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 16,
    shots_from: str | None = None,
    n_shots: int = DEFAULT_SHOTS,
    seed: int = 0,
    prompt_format: str = "raw",
    spec=None,
    loaded=None,
) -> EvalResult:
    """Zero-shot (``shots_from`` None) or few-shot accuracy of a base model on one split: ``loaded``
    when given, else loaded by ``spec`` (default: float32 on this process's device)."""
    from distributions.data import load_split, resolve_data_dir
    from actstore.models import ModelSpec
    from actstore.models.devices import default_device
    from finetune.sequences import context_length, encode_examples

    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    if n_shots < 1:
        raise UserError(f"--shots must be at least 1, got {n_shots}")
    root = resolve_data_dir(data_dir)
    examples = load_split(root, dataset, split).examples
    examples = examples[:limit] if limit else examples
    prompt_for = None
    if shots_from is not None:
        shots = load_split(root, shots_from, "train").examples
        prompt_for = few_shot_prompts(shots, n_shots=n_shots, seed=seed, exclude_self=(shots_from == dataset and split == "train"))
    loaded = loaded or (spec or ModelSpec(model, device_map=default_device())).load()
    encoded = encode_examples(
        loaded.tokenizer, examples, max_length=context_length(loaded.model, loaded.tokenizer), prompt_for=prompt_for,
        prompt_format=prompt_format,
    )
    scores = response_logliks(loaded.model, list(encoded.sequences), pad_id=loaded.tokenizer.pad_token_id, batch_size=batch_size)
    method = "zero-shot" if shots_from is None else "few-shot"
    return result_from_scores(method, dataset, split, encoded, scores)
