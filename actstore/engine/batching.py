"""Length-sorted batches filled to a token budget, and their padded tensors.

Pure functions: they never touch a model, so they are tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

PADDING_SIDES = ("right", "left")


@dataclass(frozen=True)
class EncodedSequence:
    prompt_ids: tuple[int, ...]
    continuation_ids: tuple[int, ...]

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.continuation_ids

    @property
    def n_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.continuation_ids)


@dataclass(frozen=True)
class PaddedBatch:
    input_ids: torch.Tensor  # (batch, width) long
    attention_mask: torch.Tensor  # (batch, width) long, 1 = real token
    prompt_lengths: torch.Tensor  # (batch,) long
    lengths: torch.Tensor  # (batch,) long, real tokens per row

    @property
    def last_positions(self) -> torch.Tensor:
        return last_real_positions(self.attention_mask)

    @property
    def position_ids(self) -> torch.Tensor:
        return position_ids_from_mask(self.attention_mask)

    @property
    def offsets(self) -> torch.Tensor:
        """Column of each row's first real token (0 for right padding)."""
        return self.attention_mask.argmax(dim=1)


def plan_batches(lengths: Sequence[int], batch_tokens: int, min_fill: float = 0.75, cached: int = 0,
                 min_padding: int = 0) -> list[list[int]]:
    """Indices grouped into batches whose padded size (rows x (``cached`` + longest row)) fits ``batch_tokens``.

    Longest first, so that a budget too large for the device fails on the first batch, not at
    the end of a long run. A sequence longer than the budget gets a batch of its own. A sequence
    shorter than ``min_fill`` x the batch's longest starts a new batch: a long outlier does not
    pad a whole budget of short rows (padding is computed like real tokens). ``cached``: tokens
    each row attends to on top of its own (the keys and values of a prompt pass), which count
    against the budget but are not computed, so not against the fill. ``min_padding``: a row is
    never moved to a new batch to save fewer padded tokens than this (where a pass costs more
    than that much padding, as short passes over a cache do).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for index in order:
        width = width or lengths[index]  # longest of the batch: the first one in it
        too_many = (len(current) + 1) * (cached + width) > batch_tokens
        underfilled = lengths[index] < min_fill * width and width - lengths[index] > min_padding
        if current and (too_many or underfilled):
            batches.append(current)
            current, width = [], lengths[index]
        current.append(index)
    if current:
        batches.append(current)
    return batches


def pad_batch(sequences: Sequence[EncodedSequence], pad_id: int, side: str = "right") -> PaddedBatch:
    if side not in PADDING_SIDES:
        raise ValueError(f"padding side must be one of {PADDING_SIDES}, got {side!r}")
    width = max(s.n_tokens for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        n = sequence.n_tokens
        columns = slice(0, n) if side == "right" else slice(width - n, width)
        input_ids[row, columns] = torch.tensor(sequence.ids, dtype=torch.long)
        mask[row, columns] = 1
    return PaddedBatch(
        input_ids=input_ids,
        attention_mask=mask,
        prompt_lengths=torch.tensor([len(s.prompt_ids) for s in sequences], dtype=torch.long),
        lengths=torch.tensor([s.n_tokens for s in sequences], dtype=torch.long),
    )


def last_real_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Column of the last 1 in each row: right for right padding, the end for left padding."""
    width = attention_mask.shape[1]
    return width - 1 - attention_mask.flip(dims=[1]).argmax(dim=1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, so a left-padded row sees the same rotary angles
    as the same sequence unpadded (the model's default ``arange`` would shift them)."""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
