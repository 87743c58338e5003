"""The prefix tree of a block: every shared token run once, every sequence ending where its last token is."""

import pytest

from actstore.engine.batching import EncodedSequence
from actstore.engine.prefix_tree import ViewSequences, build_forest, plan_passes

PROMPT = (1, 2, 3)


def view(key, continuations, *, with_loglik=False, deep=False):
    return ViewSequences(key, [EncodedSequence(PROMPT, c) for c in continuations], with_loglik, deep)


def paths(forest):
    """Every sequence's tokens, read back from the tree: {(view, index): prompt + continuation}."""
    found = {}

    def walk(node_id, above):
        node = forest.nodes[node_id]
        tokens = above + node.tokens
        for end in node.ends:
            found[end] = tokens
        for child in node.children:
            walk(child, tokens)

    for root in forest.roots:
        walk(root, ())
    return found


def test_views_of_one_response_share_the_response_and_yes_no_share_the_question():
    response, question, eos, yes, no = (10, 11, 12), (20, 21), 0, 30, 31
    views = [view("plain", [response + (eos,)], with_loglik=True, deep=True),
             view("yes", [response + question + (yes,)]),
             view("no", [response + question + (no,)])]
    forest = build_forest([(0,)], views)
    assert paths(forest) == {(key, 0): PROMPT + v.sequences[0].continuation_ids for key, v in
                             zip(("plain", "yes", "no"), views)}
    # prompt, response, EOS, question, Yes, No: each token once
    assert sorted(node.tokens for node in forest.nodes) == sorted([PROMPT, response, (eos,), question, (yes,), (no,)])
    assert forest.computed_tokens() == 3 + 3 + 1 + 2 + 1 + 1
    by_tokens = {node.tokens: node for node in forest.nodes}
    # the log-likelihood and full depth follow the plain sequence up to the prompt, not into the question
    assert by_tokens[response].needs_loglik and by_tokens[PROMPT].deep and by_tokens[(eos,)].needs_loglik
    assert not by_tokens[question].needs_loglik and not by_tokens[question].deep and not by_tokens[(yes,)].deep


def test_a_sequence_that_is_a_prefix_of_another_ends_inside_the_tree():
    views = [view("a", [(5, 6), (5, 6, 7, 8)]), view("b", [(5, 6, 7), (9,)])]
    forest = build_forest([(0, 1)], views)
    assert paths(forest) == {("a", 0): PROMPT + (5, 6), ("a", 1): PROMPT + (5, 6, 7, 8),
                             ("b", 0): PROMPT + (5, 6, 7), ("b", 1): PROMPT + (9,)}
    assert forest.computed_tokens() == 3 + 2 + 1 + 1 + 1  # (5 6) (7) (8) (9)
    for node in forest.nodes[1:]:
        assert node.ends  # no empty node was left by the splits: each one is some sequence's end


def test_groups_are_separate_trees_and_bad_input_is_refused():
    views = [view("plain", [(4,), (4,)])]
    forest = build_forest([(0,), (1,)], views)
    assert len(forest.roots) == 2 and forest.computed_tokens() == 2 * (3 + 1)
    with pytest.raises(ValueError, match="continuation token"):
        build_forest([(0,)], [view("plain", [()])])
    other_prompt = ViewSequences("x", [EncodedSequence((9,), (4,))], False, False)
    with pytest.raises(ValueError, match="share their prompt"):
        build_forest([(0,)], [views[0], other_prompt])


@pytest.mark.parametrize("batch_tokens", [4, 12, 40, 4096])
def test_planned_passes_run_every_node_once_on_its_parent_within_the_budget(batch_tokens):
    prompts = [(1, 2, 3), (1, 2, 3), (4,), (5, 6, 7, 8, 9), (5, 6, 7, 8, 9)]
    continuations = [(10, 11, 0), (12, 0), (13, 0), (14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
                                                  31, 32, 0), (14, 0)]
    plain = ViewSequences("plain", [EncodedSequence(p, c) for p, c in zip(prompts, continuations)], True, True)
    yes = ViewSequences("yes", [EncodedSequence(p, c[:-1] + (40, 41, 30)) for p, c in zip(prompts, continuations)],
                        False, False)
    forest = build_forest([(0, 1), (2,), (3, 4)], [plain, yes])
    parent = {child: node for node, n in enumerate(forest.nodes) for child in n.children}
    passes = list(plan_passes(forest, batch_tokens))
    latest = []  # the latest pass of each level, as a runner keeps them
    seen = []
    for planned in passes:
        del latest[planned.level:]
        lengths = [len(forest.nodes[node].tokens) for node in planned.nodes]
        assert planned.width == max(lengths) and planned.slots == len(lengths) * planned.width
        if planned.level == 0:
            assert set(planned.nodes) <= set(forest.roots) and planned.cached == 0 and not planned.rows_above
        else:
            above = latest[-1]
            assert planned.cached == above.cached + above.width
            assert [above.nodes[row] for row in planned.rows_above] == [parent[node] for node in planned.nodes]
        # within the budget, unless a single row is too long for it
        assert len(lengths) * (planned.cached + planned.width) <= batch_tokens or len(lengths) == 1
        latest.append(planned)
        seen.extend(planned.nodes)
    assert sorted(seen) == list(range(len(forest.nodes)))
    assert sum(len(forest.nodes[node].tokens) for node in seen) == forest.computed_tokens()


def test_views_are_grouped_by_their_prompts_so_stim_does_not_stop_the_others_sharing():
    from types import SimpleNamespace

    from actstore.engine.blocks import _by_prompts

    def responses(key, prompt):
        return SimpleNamespace(key=key, sequences=[EncodedSequence(prompt, (4,)), EncodedSequence(prompt, (5,))])

    views = [responses("plain", PROMPT), responses("stim", (7, 8)), responses("yes", PROMPT), responses("no", PROMPT)]
    assert [[v.key for v in group] for group in _by_prompts(views)] == [["plain", "yes", "no"], ["stim"]]
