"""The sequences of one split, in store order (example, then response in file order).

Texts are tokenized block by block (``encode_rows``), never all at once, so memory does not
grow with the dataset beyond its texts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actstore.engine.batching import EncodedSequence
from distributions.split_file import Split
from common import UserError
from actstore.engine.views import View, encode


@dataclass(frozen=True)
class SequenceTable:
    example: np.ndarray  # (n,) int32: the example's position in the split file
    response: np.ndarray  # (n,) int32: the response's position within the example
    score: np.ndarray  # (n,) float32: 1.0 for the preferred response
    prompts: tuple[str, ...]  # per sequence (the same string object for one example's responses)
    responses: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.example)

    def labels(self) -> dict[str, np.ndarray]:
        """What a store keeps per sequence from the data: the labels and the texts."""
        return {"example": self.example, "response": self.response, "score": self.score,
                "prompt_text": np.array(self.prompts, dtype=object), "response_text": np.array(self.responses, dtype=object)}


def sequence_table(split: Split, limit: int | None = None) -> SequenceTable:
    """All sequences of the first ``limit`` examples (all when None)."""
    examples = split.examples if limit is None else split.examples[:limit]
    rows = [(e.index, r, e.scores[r], e.prompt, e.responses[r]) for e in examples for r in range(len(e.responses))]
    return SequenceTable(
        example=np.array([row[0] for row in rows], dtype=np.int32),
        response=np.array([row[1] for row in rows], dtype=np.int32),
        score=np.array([row[2] for row in rows], dtype=np.float32),
        prompts=tuple(row[3] for row in rows),
        responses=tuple(row[4] for row in rows),
    )


def encode_rows(table: SequenceTable, start: int, stop: int, tokenizer, view: View, *, max_tokens: int | None,
                source: str) -> list[EncodedSequence]:
    """Token ids of sequences ``start:stop``; a sequence the model cannot read is a UserError."""
    encoded = []
    for i in range(start, stop):
        prompt, response = table.prompts[i], table.responses[i]
        prompt_ids, continuation_ids = encode(tokenizer, view, prompt, response)
        sequence = EncodedSequence(tuple(prompt_ids), tuple(continuation_ids))
        where = f"{source}: example {int(table.example[i])}, response {int(table.response[i])}"
        if not prompt_ids:
            raise UserError(f"{where}: the prompt encodes to no tokens")
        if max_tokens is not None and sequence.n_tokens > max_tokens:
            raise UserError(f"{where}: {sequence.n_tokens} tokens, more than the model's context of {max_tokens}")
        encoded.append(sequence)
    return encoded
