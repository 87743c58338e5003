"""The token prefixes a block's sequences share, as a tree: each shared prefix runs once.

The sequences of one example share its prompt; the views of one response share more: ``plain``
(response + EOS), ``yes`` and ``no`` (response + question + Yes/No) all begin with the response's
tokens, and ``yes`` and ``no`` differ only in their last token. Inserting every view's
continuation of an example below its prompt (a radix tree over token ids) gives, per example,
nodes that each hold a run of tokens read once: the prompt, the response, the question, then
``Yes`` / ``No`` / EOS. A sequence ends at the node whose last token is its own last token;
its activations are those of that node's last token, computed on the keys and values of every
node above it, which are exactly the tokens before it.

Pure planning: no model here (``actstore.engine.prompt_reuse`` runs the tree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

from actstore.engine.batching import EncodedSequence, plan_batches

# Short passes over a cache cost more than this many padded tokens per row on a CPU
# (reading every weight once, attention over the cache, appending to it): rows whose own tokens
# differ by less share a pass (benchmarks/RESULTS.md, "prefix tree").
MIN_PADDING = 16


@dataclass
class Node:
    tokens: tuple[int, ...]
    children: list[int] = field(default_factory=list)
    ends: list[tuple[str, int]] = field(default_factory=list)  # (view key, block index) of the sequences ending here
    needs_loglik: bool = False  # a sequence scored by its log-likelihood ends at or below this node
    deep: bool = False  # a sequence read at full depth (log-likelihood or final norm) ends at or below this node


@dataclass(frozen=True)
class ViewSequences:
    key: str
    sequences: Sequence[EncodedSequence]
    with_loglik: bool
    deep: bool


@dataclass
class PrefixForest:
    nodes: list[Node]
    roots: list[int]  # one per prompt group: the prompt's tokens

    def children_of(self, node_ids: Sequence[int]) -> list[tuple[int, int]]:
        """(position in ``node_ids``, child) for every child of the given nodes, in order."""
        return [(row, child) for row, node in enumerate(node_ids) for child in self.nodes[node].children]

    def computed_tokens(self) -> int:
        return sum(len(node.tokens) for node in self.nodes)


@dataclass(frozen=True)
class PlannedPass:
    """One forward pass of the tree: ``nodes`` (one per row), each on the keys and values of row
    ``rows_above[r]`` of the latest pass one level up (none for the prompts, level 0)."""

    level: int
    nodes: tuple[int, ...]
    rows_above: tuple[int, ...]
    cached: int  # width of the keys and values each row attends to (the passes above, padding included)
    width: int  # the longest row's own tokens: the pass's padded width

    @property
    def slots(self) -> int:
        """Token positions computed, padding included."""
        return len(self.nodes) * self.width


def plan_passes(forest: PrefixForest, batch_tokens: int, min_padding: int = MIN_PADDING) -> Iterator[PlannedPass]:
    """Every pass of the tree, in the order they run: a batch of prompts, then depth first the
    levels below it, each batch of rows x (cached width + own width) within ``batch_tokens``.
    A pass's parent is the latest pass one level up, so a runner keeps one pass per level."""
    for batch in plan_batches([len(forest.nodes[root].tokens) for root in forest.roots], batch_tokens):
        roots = tuple(forest.roots[i] for i in batch)
        prompts = PlannedPass(0, roots, (), 0, max(len(forest.nodes[root].tokens) for root in roots))
        yield prompts
        yield from _passes_below(forest, prompts, batch_tokens, min_padding)


def _passes_below(forest: PrefixForest, above: PlannedPass, batch_tokens: int,
                  min_padding: int) -> Iterator[PlannedPass]:
    children = forest.children_of(above.nodes)
    lengths = [len(forest.nodes[child].tokens) for _, child in children]
    cached = above.cached + above.width
    for rows in plan_batches(lengths, batch_tokens, cached=cached, min_padding=min_padding):
        planned = PlannedPass(above.level + 1, tuple(children[r][1] for r in rows), tuple(children[r][0] for r in rows),
                              cached, max(lengths[r] for r in rows))
        yield planned
        yield from _passes_below(forest, planned, batch_tokens, min_padding)


def build_forest(groups: Sequence[Sequence[int]], views: Sequence[ViewSequences]) -> PrefixForest:
    """The tree of each prompt group (block indices whose sequences share one prompt, in every view).

    Every sequence must have a non-empty continuation, so that it ends below its prompt's node.
    """
    forest = PrefixForest(nodes=[], roots=[])
    for members in groups:
        prompt = views[0].sequences[members[0]].prompt_ids
        root = _new(forest, Node(prompt))
        forest.roots.append(root)
        for view in views:
            for index in members:
                sequence = view.sequences[index]
                if sequence.prompt_ids != prompt:
                    raise ValueError("the sequences of a prompt group must share their prompt in every view")
                if not sequence.continuation_ids:
                    raise ValueError("prompt reuse needs at least one continuation token per sequence")
                _insert(forest, root, sequence.continuation_ids, (view.key, index))
    flags = {view.key: (view.with_loglik, view.deep) for view in views}
    for root in forest.roots:
        _mark(forest, root, flags)
    return forest


def _new(forest: PrefixForest, node: Node) -> int:
    forest.nodes.append(node)
    return len(forest.nodes) - 1


def _insert(forest: PrefixForest, parent: int, tokens: tuple[int, ...], end: tuple[str, int]) -> None:
    while True:
        child = next((c for c in forest.nodes[parent].children if forest.nodes[c].tokens[0] == tokens[0]), None)
        if child is None:
            forest.nodes[parent].children.append(_new(forest, Node(tokens, ends=[end])))
            return
        shared = _common_prefix(forest.nodes[child].tokens, tokens)
        if shared < len(forest.nodes[child].tokens):
            child = _split(forest, parent, child, shared)
        if shared == len(tokens):
            forest.nodes[child].ends.append(end)
            return
        parent, tokens = child, tokens[shared:]


def _split(forest: PrefixForest, parent: int, child: int, at: int) -> int:
    """Put a new node holding ``child``'s first ``at`` tokens between ``parent`` and ``child``."""
    old = forest.nodes[child]
    middle = _new(forest, Node(old.tokens[:at], children=[child]))
    old.tokens = old.tokens[at:]
    siblings = forest.nodes[parent].children
    siblings[siblings.index(child)] = middle
    return middle


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _mark(forest: PrefixForest, node_id: int, flags: dict[str, tuple[bool, bool]]) -> None:
    node = forest.nodes[node_id]
    for child in node.children:
        _mark(forest, child, flags)
    below = [forest.nodes[c] for c in node.children]
    node.needs_loglik = any(flags[key][0] for key, _ in node.ends) or any(c.needs_loglik for c in below)
    node.deep = node.needs_loglik or any(flags[key][1] for key, _ in node.ends) or any(c.deep for c in below)
