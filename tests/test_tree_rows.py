"""Flattened prompt groups: a token sees exactly its path, positions run along it, and packing keeps every group whole."""

import random

import pytest

from actstore.engine.batching import EncodedSequence
from actstore.engine.prefix_tree import ViewSequences, build_forest
from actstore.engine.tree_rows import flatten_group, pack_rows


def random_forest(seed: int, n_groups: int = 3):
    rng = random.Random(seed)
    prompts = [tuple(rng.randrange(50) for _ in range(rng.randint(1, 6))) for _ in range(n_groups)]
    views = []
    for key in ("plain", "yes", "no"):
        sequences = []
        for prompt in prompts:
            for _ in range(3):  # responses share random prefixes, so the tree branches at many depths
                sequences.append(EncodedSequence(prompt, tuple(rng.randrange(3) for _ in range(rng.randint(1, 7)))))
        views.append(ViewSequences(key, sequences, with_loglik=key == "plain", deep=key == "plain"))
    return build_forest([range(3 * g, 3 * g + 3) for g in range(n_groups)], views), views


def ancestors_and_self(forest, root):
    """node -> the set of nodes on its path (root first), by walking the tree."""
    found = {}

    def walk(node, above):
        found[node] = above | {node}
        for child in forest.nodes[node].children:
            walk(child, found[node])

    walk(root, frozenset())
    return found


@pytest.mark.parametrize("seed", range(20))
def test_a_token_sees_exactly_its_path_at_positions_along_it(seed):
    forest, views = random_forest(seed)
    for root in forest.roots:
        flat = flatten_group(forest, root)
        slot_node = [node for node, start in zip(flat.nodes, flat.node_starts)
                     for _ in range(len(forest.nodes[node].tokens))]
        assert len(slot_node) == len(flat) == sum(len(forest.nodes[n].tokens) for n in ancestors_and_self(forest, root))
        paths = ancestors_and_self(forest, root)
        for q in range(len(flat)):
            seen = {k for k in range(len(flat)) if k <= q < flat.subtree_ends[k]}
            expected = {k for k in range(len(flat)) if slot_node[k] in paths[slot_node[q]]
                        and (slot_node[k] != slot_node[q] or k <= q)}
            assert seen == expected
            assert flat.positions[q] == len(seen) - 1  # everything it sees comes before it on its path
        for index, parent in enumerate(flat.parents):  # parents are laid out before their children
            assert parent < index and (parent < 0) == (index == 0)
        # each sequence's tokens read back along its path, in order
        for view in views:
            for i, sequence in enumerate(view.sequences):
                end_node = next((n for n in flat.nodes if (view.key, i) in forest.nodes[n].ends), None)
                if end_node is None:
                    continue
                last = flat.node_starts[flat.nodes.index(end_node)] + len(forest.nodes[end_node].tokens) - 1
                path = [k for k in range(len(flat)) if k <= last < flat.subtree_ends[k]]
                assert tuple(flat.tokens[k] for k in path) == sequence.ids


@pytest.mark.parametrize("seed", range(10))
def test_packing_keeps_groups_whole_within_the_budget(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 60))]
    budget = rng.choice([256, 1024, 4096])
    passes = pack_rows(lengths, budget)
    placed = [group for planned in passes for row in planned.rows for group in row]
    assert sorted(placed) == list(range(len(lengths)))
    for planned in passes:
        used = [sum(lengths[g] for g in row) for row in planned.rows]
        assert max(used) == planned.width
        assert planned.slots <= budget or len(planned.rows) == 1  # a group wider than the budget runs alone
    assert pack_rows([], 100) == []
