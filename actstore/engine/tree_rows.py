"""The prefix tree of each prompt group as one flattened row, and rows packed into passes.

A prompt group's tree (``actstore.engine.prefix_tree``) is laid out depth first: each node's tokens
once, a parent before its children. A token's position is its position along its own path (the
tokens of its ancestors, then its node's tokens before it), and it may attend to exactly the
tokens on that path: those of its ancestors and its own node's earlier ones. Depth first, a
node's subtree occupies consecutive slots, so "key slot k is on query slot q's path" is
``k <= q < subtree_end[k]``, where ``subtree_end`` is the end of the subtree of k's node: one
integer per slot instead of a square mask. Several groups packed in a row are separate subtrees
of it, and padding (after the last group) ends its own subtree at itself, so no real token sees
it.

Pure planning: no model here (``actstore.engine.prompt_reuse`` runs the rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from actstore.engine.prefix_tree import PrefixForest

@dataclass(frozen=True)
class FlatGroup:
    """One prompt group's tree, depth first. Slots are relative to the group's first."""

    nodes: tuple[int, ...]  # forest node ids, in slot order
    node_starts: tuple[int, ...]  # first slot of each of ``nodes``
    parents: tuple[int, ...]  # per node of ``nodes``, its parent's index in ``nodes`` (-1 for the prompt)
    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    subtree_ends: tuple[int, ...]  # per slot, the end of its node's subtree

    def __len__(self) -> int:
        return len(self.tokens)


def flatten_group(forest: PrefixForest, root: int) -> FlatGroup:
    nodes: list[int] = []
    starts: list[int] = []
    parents: list[int] = []
    tokens: list[int] = []
    positions: list[int] = []
    ends: list[int] = []
    stack = [(root, -1, 0)]  # (node, parent's index in nodes, position of its first token)
    while stack:
        node_id, parent, position = stack.pop()
        node = forest.nodes[node_id]
        nodes.append(node_id)
        starts.append(len(tokens))
        parents.append(parent)
        tokens.extend(node.tokens)
        positions.extend(range(position, position + len(node.tokens)))
        ends.extend([-1] * len(node.tokens))  # filled once the subtree is laid out
        here = len(nodes) - 1
        stack.extend((child, here, position + len(node.tokens)) for child in reversed(node.children))
    # A node's subtree ends where the next node that is not its descendant starts: walk back up.
    subtree_end = [len(tokens)] * len(nodes)
    open_path: list[int] = []
    for index, parent in enumerate(parents):
        while open_path and open_path[-1] != parent:
            subtree_end[open_path.pop()] = starts[index]
        open_path.append(index)
    for index, start in enumerate(starts):
        stop = starts[index] + len(forest.nodes[nodes[index]].tokens)
        ends[start:stop] = [subtree_end[index]] * (stop - start)
    return FlatGroup(tuple(nodes), tuple(starts), tuple(parents), tuple(tokens), tuple(positions), tuple(ends))


@dataclass(frozen=True)
class PlannedRows:
    """One pass: ``rows[r]`` = the groups (indices into the flattened groups) packed in row r, in order."""

    rows: tuple[tuple[int, ...], ...]
    width: int

    @property
    def slots(self) -> int:
        return len(self.rows) * self.width


def pack_rows(lengths: Sequence[int], batch_tokens: int) -> list[PlannedRows]:
    """Groups of the given lengths packed (first fit, longest first) into rows as wide as the longest
    group, and the rows into passes of at most ``batch_tokens`` slots (at least one row each). Each
    group sits whole in one row. (Rows as wide as each pass's own longest group fill worse: 7% more
    slots and 4% more time on alpaca_mmlu, benchmarks/RESULTS.md.)"""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    if not order:
        return []
    width = lengths[order[0]]
    rows: list[list[int]] = []
    free: list[int] = []
    for group in order:
        row = next((r for r, space in enumerate(free) if space >= lengths[group]), None)
        if row is None:
            rows.append([])
            free.append(width)
            row = len(rows) - 1
        rows[row].append(group)
        free[row] -= lengths[group]
    per_pass = max(1, batch_tokens // width)
    return [PlannedRows(tuple(tuple(row) for row in rows[start:start + per_pass]),
                        max(width - space for space in free[start:start + per_pass]))
            for start in range(0, len(rows), per_pass)]


@dataclass(frozen=True)
class RowTensors:
    """The tensors of one pass of packed rows (all (rows, width), on the host)."""

    input_ids: torch.Tensor
    positions: torch.Tensor  # along each slot's own path
    subtree_ends: torch.Tensor
    offsets: tuple[tuple[int, ...], ...]  # per row, the slot of each of its groups' first token (after any prefix)


def row_tensors(flat: Sequence[FlatGroup], rows: Sequence[Sequence[int]], pad_id: int, *,
                prefix: int = 0) -> RowTensors:
    """``rows[r]`` = indices into ``flat`` laid out one after the other in row r, padding after them.
    ``prefix``: slots put at the root of every group, before its prompt (prompt tuning's virtual
    tokens: their ids are ``pad_id``, for the caller to replace by their embeddings); every token of
    the group sees them and counts them in its position."""
    width = max(sum(prefix + len(flat[g]) for g in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    subtree_ends = torch.arange(1, width + 1).repeat(len(rows), 1)  # padding sees itself only
    offsets = []
    for r, row in enumerate(rows):
        start, starts = 0, []
        for member in row:
            group = flat[member]
            end = start + prefix + len(group)
            positions[r, start:start + prefix] = torch.arange(prefix)
            subtree_ends[r, start:start + prefix] = end
            start += prefix
            ids[r, start:end] = torch.tensor(group.tokens)
            positions[r, start:end] = torch.tensor(group.positions) + prefix
            subtree_ends[r, start:end] = torch.tensor(group.subtree_ends) + start
            starts.append(start)
            start = end
        offsets.append(tuple(starts))
    return RowTensors(ids, positions, subtree_ends, tuple(offsets))
