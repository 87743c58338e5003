"""Evaluating live methods: per-sequence scores -> all (best, other) pairs -> the shared metrics.

Every live method here has a natural probability scale, so P(best) = sigmoid(margin) with
temperature 1: a reward model is trained on exactly that Bradley-Terry probability, and for
zero-/few-shot sigmoid(log-likelihood difference) is the two-response softmax of likelihoods.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from finetune.sequences import EncodedSplit, TokenSequence
from finetune.shared_prompts import score_grouped
from common.metrics import ExampleOutcomes, Metrics, compute_metrics, example_outcomes, pair_indices, pair_margins

TABLE_COLUMNS = [
    "method", "dataset", "split", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
    "auroc", "brier", "rms_calibration_error", "n_pairs", "dropped_pairs",
]


@dataclass
class EvalResult:
    method: str
    dataset: str
    split: str
    metrics: Metrics
    scores: np.ndarray  # one per sequence kept, ordered by example then response
    example: np.ndarray  # Example.index per sequence
    is_best: np.ndarray
    n_examples: int  # examples in the split (after --limit), kept or not
    dropped_examples: int  # longer than the model's context
    dropped_pairs: int

    @property
    def outcomes(self) -> ExampleOutcomes:
        best, _ = pair_indices(self.example, self.is_best)
        return example_outcomes(pair_margins(self.scores, self.example, self.is_best), self.example[best])

    def row(self) -> dict:
        return {
            "method": self.method,
            "dataset": self.dataset,
            "split": self.split,
            **self.metrics.as_dict(),
            "dropped_examples": self.dropped_examples,
            "dropped_pairs": self.dropped_pairs,
        }


def metrics_from_scores(scores: np.ndarray, example: np.ndarray, is_best: np.ndarray, *, seed: int = 0) -> Metrics:
    best, _ = pair_indices(example, is_best)
    margins = pair_margins(scores, example, is_best)
    return compute_metrics(margins, temperature=1.0, seed=seed, pair_example=example[best])


def result_from_scores(method: str, dataset: str, split: str, encoded: EncodedSplit, scores: np.ndarray) -> EvalResult:
    from common import UserError

    if not encoded.sequences:
        raise UserError(f"{dataset}/{split}: no example fits the model's context ({encoded.max_length} tokens)")
    example, is_best = encoded.arrays()
    return EvalResult(
        method=method,
        dataset=dataset,
        split=split,
        metrics=metrics_from_scores(scores, example, is_best),
        scores=scores,
        example=example,
        is_best=is_best,
        n_examples=encoded.n_examples,
        dropped_examples=len(encoded.dropped_examples),
        dropped_pairs=encoded.dropped_pairs,
    )


@torch.no_grad()
def reward_scores(reward_model, sequences: list[TokenSequence], *, pad_id: int, batch_size: int = 16) -> np.ndarray:
    """The reward of every sequence; a sequence's reward does not depend on what it is batched with."""
    reward_model.eval()
    device = reward_model.head.weight.device

    def score_batch(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return reward_model(**{name: t.to(device) for name, t in batch.items()})

    return score_grouped(sequences, batch_size, score_batch, pad_id)


def run_prompt_format(record: dict) -> str:
    """The prompt format a reward model was trained with (raw for runs made before it was recorded)."""
    return record.get("prompt_format") or "raw"


def evaluate_reward_model(
    run_dir: Path,
    dataset: str,
    *,
    data_dir: str | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 16,
    spec=None,
    loaded=None,
) -> EvalResult:
    """Score every response of ``dataset``'s ``split`` with a saved reward model (on ``loaded``, a base
    model shared with other work, when given: its adapter is taken out again afterwards)."""
    from finetune.checkpoint import load_reward_model, unload_adapter

    trained = load_reward_model(Path(run_dir), spec=spec, loaded=loaded)
    try:
        return _score_split(trained, dataset, data_dir=data_dir, split=split, limit=limit, batch_size=batch_size)
    finally:
        if loaded is not None:
            unload_adapter(trained)


def _score_split(trained, dataset: str, *, data_dir: str | None, split: str, limit: int | None,
                 batch_size: int) -> EvalResult:
    from distributions.data import load_split, resolve_data_dir
    from finetune.sequences import context_length, encode_examples

    examples = load_split(resolve_data_dir(data_dir), dataset, split).examples
    examples = examples[:limit] if limit else examples
    causal_lm = trained.model.causal_lm
    encoded = encode_examples(
        trained.tokenizer,
        examples,
        max_length=context_length(causal_lm, trained.tokenizer),
        extra_tokens=trained.settings.extra_tokens,
        prompt_format=run_prompt_format(trained.record),
    )
    scores = reward_scores(trained.model, list(encoded.sequences), pad_id=trained.tokenizer.pad_token_id, batch_size=batch_size)
    return result_from_scores(trained.settings.method, dataset, split, encoded, scores)
