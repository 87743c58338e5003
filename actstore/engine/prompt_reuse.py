"""Shared-prefix reuse: the sequences of a block share token prefixes, so run each prefix once.

The responses of one example share its prompt, and the views of one response share the
response (``plain``, ``yes`` and ``no`` all begin with it; ``yes`` and ``no`` differ only in
their last token). ``actstore.engine.prefix_tree`` puts each example's sequences in a tree of shared
token runs. Tree attention runs it (``_RowRunner``): each prompt group is one flattened row
(``actstore.engine.tree_rows``) whose mask lets a token see exactly its path, rows packed into passes,
no cache between passes; a sequence's activations are read at its last token's slot, its
log-likelihood summed over the nodes of its path below the prompt (a node's first token
predicted at its parent's last slot). Attention implementations that take no mask (flash
attention) run the tree level by level instead (``_TreeRunner``): the prompts in passes that
keep their keys and values, then each level on a copy of the rows above it. Either way the
values are the whole sequence's, up to float rounding (batches differ in shape, so they are not
bitwise those of one full-sequence pass).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from actstore.engine.attention_masks import decoder_attention_mask, new_cache, takes_tree_masks, tree_attention_mask
from actstore.engine.batching import EncodedSequence, pad_batch, position_ids_from_mask
from actstore.engine.capture import Captured, CapturePlan, DecoderParts, HostCaptured, LastTokenCapture, StopForward
from actstore.engine.forward import BatchActivations, continuation_positions, token_logprobs
from actstore.engine.logits import ModelLogits
from actstore.engine.prefix_tree import PlannedPass, PrefixForest, ViewSequences, build_forest, plan_passes
from actstore.engine.tree_rows import FlatGroup, PlannedRows, flatten_group, pack_rows, row_tensors
from actstore.engine.stage_clock import StageClock


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


@dataclass(frozen=True)
class Responses:
    """One view's sequences over the block's prompts, and the capture (not entered) that says what to keep."""

    key: str
    sequences: Sequence[EncodedSequence]
    capture: LastTokenCapture
    with_loglik: bool
    clock: StageClock

    @property
    def deep(self) -> bool:
        return self.with_loglik or self.capture.plan.stop_after is None


@dataclass(frozen=True)
class TreePass:
    """One pass over nodes of the tree: its keys and values (the nodes above included) and what
    the passes below it need."""

    nodes: Sequence[int]  # node per row
    cache: object  # DynamicCache, row r = the tokens from the prompt down to node r
    mask: torch.Tensor  # (rows, width) attention mask of those tokens (padding in between)
    positions: torch.Tensor  # (rows, width) each of those slots' position in its sequence
    lengths: torch.Tensor  # (rows,) real tokens down to the node
    last_hidden: torch.Tensor | None  # (rows, hidden) final hidden state at the node's last token (deep passes)
    loglik: torch.Tensor | None  # (rows,) float64, log-likelihood of the continuation tokens down to the node

    @property
    def width(self) -> int:
        return self.mask.shape[1]


def run_tree(parts: DecoderParts, groups: Sequence[PromptGroup], views: Sequence[Responses], *, pad_id: int,
             batch_tokens: int, padding_side: str,
             clock: StageClock) -> Iterator[tuple[str, list[int], BatchActivations]]:
    """(view key, block indices, their activations) for every sequence of every view, each shared
    token prefix run once (``actstore.engine.prefix_tree``).

    Tree attention: each prompt group's tree is one flattened row segment whose mask lets a token
    see exactly its path (``actstore.engine.tree_rows``), segments packed into rows and rows into passes
    of about ``batch_tokens`` slots, no cache between passes. Attention implementations that take
    no such mask (flash attention reads only a padding mask) run the tree level by level instead:
    the prompts, then each level on the keys and values of the level above
    (``prefix_tree.plan_passes``)."""
    forest = build_forest([group.members for group in groups],
                          [ViewSequences(v.key, v.sequences, v.with_loglik, v.deep) for v in views])
    by_key = {view.key: view for view in views}
    if takes_tree_masks(parts.body.config):
        rows = _RowRunner(parts, forest, by_key, pad_id=pad_id, clock=clock)
        flat = [flatten_group(forest, root) for root in forest.roots]
        for planned in pack_rows([len(group) for group in flat], batch_tokens):
            yield from rows.run(flat, planned)
        return
    runner = _TreeRunner(parts, forest, by_key, pad_id=pad_id, padding_side=padding_side, clock=clock)
    latest: list[TreePass] = []  # the latest pass of each level down to the current one
    for planned in plan_passes(forest, batch_tokens):
        del latest[planned.level:]
        if planned.level == 0:
            latest.append(runner.prompt_pass(planned.nodes))
            continue
        node_pass, captured = runner.node_pass(latest[-1], planned)
        latest.append(node_pass)
        yield from runner.finished(node_pass, captured)


def sequence_logliks(parts: DecoderParts, sequences: Sequence[EncodedSequence], *, pad_id: int, batch_tokens: int,
                     padding_side: str = "right") -> np.ndarray:
    """sum_t log p(continuation token t | prompt, tokens before t), float64, one per sequence, through
    the same prefix tree as the store's ``loglik`` (live zero- and few-shot read this)."""
    nothing_kept = LastTokenCapture(parts, CapturePlan(layers=()))
    view = Responses("loglik", sequences, nothing_kept, with_loglik=True, clock=StageClock())
    logliks = np.empty(len(sequences), dtype=np.float64)
    for _, indices, out in run_tree(parts, group_by_prompt(sequences), [view], pad_id=pad_id,
                                    batch_tokens=batch_tokens, padding_side=padding_side, clock=view.clock):
        logliks[indices] = out.loglik
    return logliks


def union_captures(parts: DecoderParts, views: Sequence[Responses]) -> tuple[LastTokenCapture, LastTokenCapture]:
    """(deep, shallow): one capture of every site any view keeps, to full depth and stopping at the
    deepest kept layer (for passes where no sequence needs the final hidden states)."""
    plans = [view.capture.plan for view in views]
    layers = tuple(sorted(set().union(*(plan.layers for plan in plans))))
    heads = tuple(sorted(set().union(*(plan.head_layers for plan in plans))))
    n_heads = next((view.capture.n_heads for view in views if view.capture.n_heads), None)
    union = CapturePlan(layers, heads, final_norm=any(plan.final_norm for plan in plans), stop_after=None)
    deep = LastTokenCapture(parts, union, n_heads)
    return deep, LastTokenCapture(parts, replace(union, stop_after=max(layers)), n_heads) if layers else deep


class PlacedNode(NamedTuple):
    row: int
    start: int  # its first slot in the row
    node: int  # forest node id
    parent: int  # the parent's index in the pass's nodes, -1 for a prompt
    point: int  # the index of its capture point (where sequences end), -1 if none ends here


@dataclass(frozen=True)
class RowsPass:
    """The tensors of one tree-attention pass and where each sequence ends in it."""

    input_ids: torch.Tensor  # (rows, width)
    positions: torch.Tensor  # (rows, width) position along each slot's own path
    subtree_ends: torch.Tensor  # (rows, width)
    point_rows: torch.Tensor  # (points,) the row and slot of each node a sequence ends at
    point_slots: torch.Tensor
    ends: dict[str, tuple[list[int], list[int]]]  # view key -> (point of each ending sequence, its block index)
    nodes: list[PlacedNode]  # parents first
    deep: bool
    with_loglik: bool


class _RowRunner:
    """Runs packed rows of flattened prompt groups, one forward pass each (``actstore.engine.tree_rows``)."""

    def __init__(self, parts: DecoderParts, forest: PrefixForest, views: dict[str, Responses], *, pad_id: int,
                 clock: StageClock):
        self.parts, self.forest, self.views, self.pad_id, self.clock = parts, forest, views, pad_id, clock
        self.deep_capture, self.shallow_capture = union_captures(parts, list(views.values()))

    def layout(self, flat: Sequence[FlatGroup], planned: PlannedRows) -> RowsPass:
        tensors = row_tensors(flat, planned.rows, self.pad_id)
        point_rows, point_slots, nodes = [], [], []
        ends: dict[str, tuple[list[int], list[int]]] = {}
        deep = with_loglik = False
        for row, (members, offsets) in enumerate(zip(planned.rows, tensors.offsets)):
            for member, offset in zip(members, offsets):
                group = flat[member]
                root = self.forest.nodes[group.nodes[0]]
                deep, with_loglik = deep or root.deep, with_loglik or root.needs_loglik
                first_here = len(nodes)
                for node_id, start, parent in zip(group.nodes, group.node_starts, group.parents):
                    node = self.forest.nodes[node_id]
                    nodes.append(PlacedNode(row, offset + start, node_id, first_here + parent if parent >= 0 else -1,
                                            len(point_rows) if node.ends else -1))
                    if node.ends:
                        point_rows.append(row)
                        point_slots.append(offset + start + len(node.tokens) - 1)
                        for key, index in node.ends:
                            points, indices = ends.setdefault(key, ([], []))
                            points.append(len(point_rows) - 1)
                            indices.append(index)
        device = self.parts.input_device
        return RowsPass(tensors.input_ids.to(device), tensors.positions.to(device), tensors.subtree_ends.to(device),
                        torch.tensor(point_rows, device=device), torch.tensor(point_slots, device=device),
                        ends, nodes, deep, with_loglik)

    def run(self, flat: Sequence[FlatGroup], planned: PlannedRows) -> Iterator[tuple[str, list[int], BatchActivations]]:
        with self.clock.stage("gather"):
            rows = self.layout(flat, planned)
        body = self.parts.body
        capture = self.deep_capture if rows.deep else self.shallow_capture
        with capture, self.clock.stage("forward"):
            capture.begin(rows.point_slots, rows.point_rows)
            mask = tree_attention_mask(body.config, rows.subtree_ends, rows.positions, body.dtype)
            output = _run(body, input_ids=rows.input_ids, position_ids=rows.positions, attention_mask=mask,
                          use_cache=False)
        with self.clock.stage("gather"):
            loglik = self.point_logliks(rows, output).cpu().numpy() if rows.with_loglik else None
            captured = HostCaptured.of(capture.captured)
            for key, (points, indices) in rows.ends.items():
                yield key, indices, _activations(self.views[key], captured, points, indices, loglik)

    def point_logliks(self, rows: RowsPass, output) -> torch.Tensor:
        """Per point, float64: the sum of log p(token) over the continuation tokens on its path (every
        node below the prompt): a node's first token predicted at its parent's last slot, the others
        at the slot before them."""
        if output is None:
            raise RuntimeError("the log-likelihood needs the full forward pass; the capture plan stopped early")
        target_rows, target_slots, predictor_slots, target_nodes = [], [], [], []
        for index, placed in enumerate(rows.nodes):
            node = self.forest.nodes[placed.node]
            if placed.parent < 0 or not node.needs_loglik:
                continue
            parent = rows.nodes[placed.parent]
            parent_last = parent.start + len(self.forest.nodes[parent.node].tokens) - 1
            n, start = len(node.tokens), placed.start
            target_rows.extend([placed.row] * n)
            target_slots.extend(range(start, start + n))
            predictor_slots.extend([parent_last, *range(start, start + n - 1)])
            target_nodes.extend([index] * n)
        device = self.parts.input_device
        target_rows_t = torch.tensor(target_rows, device=device)
        hidden = output.last_hidden_state[target_rows_t, torch.tensor(predictor_slots, device=device)]
        targets = rows.input_ids[target_rows_t, torch.tensor(target_slots, device=device)]
        node_sums = torch.zeros(len(rows.nodes), dtype=torch.float64, device=device)
        node_sums.index_add_(0, torch.tensor(target_nodes, dtype=torch.long, device=device),
                             token_logprobs(hidden, targets, self.parts.loglik_head))
        # a point's sum is that of the nodes on its path: which nodes those are is known on the host, so the
        # sums stay on the device (no copy to the host and back)
        on_path: list[list[int]] = []
        path_points, path_nodes = [], []
        for index, placed in enumerate(rows.nodes):  # parents come first
            on_path.append([*(on_path[placed.parent] if placed.parent >= 0 else []), index])
            if placed.point >= 0:
                path_points += [placed.point] * len(on_path[index])
                path_nodes += on_path[index]
        by_point = torch.zeros(len(rows.point_rows), dtype=torch.float64, device=device)
        by_point.index_add_(0, torch.tensor(path_points, dtype=torch.long, device=device),
                            node_sums[torch.tensor(path_nodes, dtype=torch.long, device=device)])
        return by_point


class _TreeRunner:
    def __init__(self, parts: DecoderParts, forest: PrefixForest, views: dict[str, Responses], *, pad_id: int,
                 padding_side: str, clock: StageClock):
        self.parts, self.forest, self.views = parts, forest, views
        self.pad_id, self.padding_side, self.clock = pad_id, padding_side, clock
        self.deep_capture, self.shallow_capture = union_captures(parts, list(views.values()))

    def prompt_pass(self, roots: Sequence[int]) -> TreePass:
        nodes = [self.forest.nodes[root] for root in roots]
        deep = any(node.deep for node in nodes)
        device = self.parts.input_device
        prompts = pad_batch([EncodedSequence(node.tokens, ()) for node in nodes], self.pad_id, self.padding_side)
        mask = prompts.attention_mask.to(device)
        last = prompts.last_positions.to(device)
        positions = prompts.position_ids.to(device)
        cache = new_cache()
        capture = self.deep_capture if deep else self.shallow_capture
        with capture, self.clock.stage("forward"):
            capture.begin(last)  # what the hooks read here is discarded: no sequence ends in its prompt
            output = _run(self.parts.body, input_ids=prompts.input_ids.to(device), attention_mask=mask,
                          position_ids=positions, use_cache=True, **{cache_argument(self.parts.body): cache})
        last_hidden = _at(output, last) if deep else None
        loglik = torch.zeros(len(roots), dtype=torch.float64, device=device) if deep else None
        return TreePass(roots, cache, mask, positions, prompts.lengths.to(device), last_hidden, loglik)

    def node_pass(self, above: TreePass, planned: PlannedPass) -> tuple[TreePass, Captured]:
        """The tokens of the planned nodes on the keys and values of their rows above."""
        device = self.parts.input_device
        nodes = [self.forest.nodes[node] for node in planned.nodes]
        deep, with_loglik = any(n.deep for n in nodes), any(n.needs_loglik for n in nodes)
        if above.width != planned.cached:
            raise RuntimeError(f"the pass above is {above.width} tokens wide, planned {planned.cached}")
        rows_above = torch.tensor(planned.rows_above, device=device)
        segments = pad_batch([EncodedSequence((), node.tokens) for node in nodes], self.pad_id, self.padding_side)
        ids, mask = segments.input_ids.to(device), segments.attention_mask.to(device)
        last = segments.last_positions.to(device)
        cache = repeat_rows(above.cache, rows_above)
        padding = torch.cat([above.mask[rows_above], mask], dim=1)
        own_positions = above.lengths[rows_above][:, None] + position_ids_from_mask(mask)
        positions = torch.cat([above.positions[rows_above], own_positions], dim=1)
        body = self.parts.body
        capture = self.deep_capture if deep else self.shallow_capture
        with capture, self.clock.stage("forward"):
            capture.begin(last)
            output = _run(body, input_ids=ids, position_ids=own_positions, use_cache=True,
                          attention_mask=decoder_attention_mask(body.config, padding, positions, ids.shape[1],
                                                                body.dtype),
                          **{cache_argument(body): cache})
        with self.clock.stage("gather"):
            loglik = None
            if with_loglik:
                loglik = above.loglik[rows_above] + loglik_after_prompt(
                    output.last_hidden_state, above.last_hidden[rows_above], ids, segments.offsets, segments.lengths,
                    self.parts.loglik_head)
            node_pass = TreePass(planned.nodes, cache, padding, positions, above.lengths[rows_above] + segments.lengths.to(device),
                                 _at(output, last) if deep else None, loglik)
        return node_pass, capture.captured

    def finished(self, node_pass: TreePass, captured: Captured) -> Iterator[tuple[str, list[int], BatchActivations]]:
        """The activations of the sequences that end at this pass's nodes, view by view."""
        ending: dict[str, tuple[list[int], list[int]]] = {}
        for row, node in enumerate(node_pass.nodes):
            for key, index in self.forest.nodes[node].ends:
                rows, indices = ending.setdefault(key, ([], []))
                rows.append(row)
                indices.append(index)
        host = HostCaptured.of(captured)
        loglik = node_pass.loglik.cpu().numpy() if node_pass.loglik is not None else None
        for key, (rows, indices) in ending.items():
            with self.clock.stage("gather"):
                yield key, indices, _activations(self.views[key], host, rows, indices, loglik)


def _at(output, positions: torch.Tensor) -> torch.Tensor:
    if output is None:
        raise RuntimeError("a full-depth pass stopped early")
    return output.last_hidden_state[torch.arange(len(positions), device=positions.device), positions]


def _activations(view: Responses, captured: HostCaptured, rows: list[int], indices: list[int],
                 loglik: np.ndarray | None) -> BatchActivations:
    plan = view.capture.plan
    sequences = [view.sequences[i] for i in indices]
    residual = captured.residual[np.ix_([captured.layers.index(layer) for layer in plan.layers], rows)] \
        if plan.layers else np.empty((0, len(rows), 0), dtype=np.float32)
    return BatchActivations(
        residual=residual,
        n_tokens=np.array([s.n_tokens for s in sequences], dtype=np.int32),
        last_token=np.array([s.continuation_ids[-1] for s in sequences], dtype=np.int32),
        final_norm=captured.final_norm[rows] if plan.final_norm else None,
        heads=captured.heads[np.ix_([captured.head_layers.index(layer) for layer in plan.head_layers], rows)]
        if plan.head_layers else None,
        loglik=loglik[rows] if view.with_loglik else None,
    )


def repeat_rows(cache, rows: torch.Tensor):
    """A new cache whose row r is ``cache``'s row ``rows[r]`` (layers the prompt pass never reached stay empty)."""
    repeated = new_cache()
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
                        head: ModelLogits) -> torch.Tensor:
    """Per row, sum_t log p(continuation token t | prompt, tokens before t), float64: token 0 from the
    prompt's last hidden state (``prompt_last_hidden``, one per row), token t > 0 from continuation
    position t - 1. ``offsets``: each row's first real column (0 for right padding); ``offsets`` and ``lengths``
    on the host, where the positions are planned. The store's log-likelihood in the level-by-level tree
    comes from here."""
    host_rows, host_columns = continuation_positions(offsets, torch.zeros_like(lengths), lengths)
    device = continuation_hidden.device
    first = (host_columns == offsets[host_rows]).to(device)
    rows, columns = host_rows.to(device), host_columns.to(device)
    hidden = torch.where(first[:, None], prompt_last_hidden[rows], continuation_hidden[rows, (columns - 1).clamp(min=0)])
    totals = torch.zeros(len(lengths), dtype=torch.float64, device=hidden.device)
    return totals.index_add_(0, rows, token_logprobs(hidden, continuation_ids[rows, columns], head))
