"""Token sequences for live scoring: one per (example, response), in store order, and batching.

Every live method reads the ``plain`` view, encoded by ``actstore.engine.views.encode``: the prompt
with the tokenizer's own special tokens (or, with the ``chat`` prompt format, as a user turn in
its chat template), then response + EOS. The reward models score the last
real token (the EOS); zero-/few-shot score the log-likelihood of response + EOS. Sequences are
ordered by example, then by response in file order, like the activation store.

Nothing is truncated: a sequence longer than the model's context is dropped together with its
whole example (as the reference's length filter does), and the drop is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from actstore.engine.batching import EncodedSequence
from distributions.split_file import Example
from actstore.engine.views import encode, parse_views, require_chat_template

PromptBuilder = Callable[[Example], str]


@dataclass(frozen=True, kw_only=True)
class TokenSequence(EncodedSequence):
    """One response of one example: the extraction's ``EncodedSequence`` (prompt, response + EOS)
    plus where it comes from, so the same batching and padding code serves both."""

    example: int  # Example.index: position in the split file
    response: int  # index of the response within its example
    is_best: bool


@dataclass(frozen=True)
class EncodedSplit:
    """The sequences of the examples that fit the context, and what was dropped."""

    sequences: tuple[TokenSequence, ...]
    n_examples: int
    dropped_examples: tuple[int, ...]  # Example.index of each example left out
    dropped_pairs: int
    max_length: int

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-sequence (example index, is_best), the layout the shared metrics read."""
        example = np.array([s.example for s in self.sequences], dtype=np.int64)
        is_best = np.array([s.is_best for s in self.sequences], dtype=bool)
        return example, is_best


def context_length(model, tokenizer) -> int:
    """The longest sequence the model takes: its position limit, or the tokenizer's if smaller."""
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 1 << 62
    tokenizer_limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if 0 < tokenizer_limit < 1_000_000:  # transformers uses a huge sentinel for "unset"
        limit = min(limit, tokenizer_limit)
    return limit


def encode_examples(
    tokenizer,
    examples: Sequence[Example],
    *,
    max_length: int,
    prompt_for: PromptBuilder | None = None,
    extra_tokens: int = 0,
    prompt_format: str = "raw",
) -> EncodedSplit:
    """Encode every response of every example; drop examples with a sequence over ``max_length``.

    ``prompt_for`` replaces an example's prompt (few-shot prefixes); ``extra_tokens`` counts
    tokens the model adds in front (prompt tuning's virtual tokens) against the limit.
    """
    [view] = parse_views("plain", prompt_format)
    if prompt_format == "chat":
        require_chat_template(tokenizer)
    kept: list[TokenSequence] = []
    dropped: list[int] = []
    dropped_pairs = 0
    for example in examples:
        prompt = prompt_for(example) if prompt_for else example.prompt
        encoded = []
        for r, response in enumerate(example.responses):
            prompt_ids, continuation_ids = encode(tokenizer, view, prompt, response)
            encoded.append(TokenSequence(tuple(prompt_ids), tuple(continuation_ids), example=example.index,
                                         response=r, is_best=r == example.best))
        if max(s.n_tokens for s in encoded) + extra_tokens > max_length:
            dropped.append(example.index)
            dropped_pairs += len(example.responses) - 1
            continue
        kept.extend(encoded)
    return EncodedSplit(tuple(kept), len(examples), tuple(dropped), dropped_pairs, max_length)

