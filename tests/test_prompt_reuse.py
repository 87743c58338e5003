"""Shared-prompt reuse gives the plain path's activations and log-likelihoods, running fewer tokens."""

import numpy as np
import pytest
import torch

from actstore import open_store
from actstore.engine.batching import EncodedSequence
from actstore.engine.extraction import extract
from actstore.engine.prompt_reuse import group_by_prompt
from test_extract import config, data_dir  # noqa: F401, F811  (data_dir is a fixture)


def test_group_by_prompt_keeps_runs_of_one_prompt():
    sequences = [EncodedSequence((1, 2), (5,)), EncodedSequence((1, 2), (6, 7)), EncodedSequence((3,), (8,)),
                 EncodedSequence((1, 2), (9,))]
    groups = group_by_prompt(sequences)
    assert [g.members for g in groups] == [(0, 1), (2,), (3,)]  # only consecutive sequences share a pass
    assert [g.prompt_ids for g in groups] == [(1, 2), (3,), (1, 2)]


def tokens_run_by_first_block(model):
    seen = []
    hook = model.model.layers[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[:2].numel()))
    return seen, hook


@pytest.mark.parametrize("engine", ["tree attention", "level by level"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("views, layers, site", [(("plain",), "all", "heads"), (("yes",), "0,2", "residual"),
                                                  (("plain", "yes", "no", "stim"), "all", "heads"),
                                                  (("yes", "no"), "0,2", "residual")])
def test_prompt_reuse_matches_the_plain_path(tiny_model, data_dir, tmp_path, padding_side, views, layers, site,
                                             engine, monkeypatch):
    """Both engines of the prefix tree: tree attention (the default), and level by level on key/value
    caches (the path of attention implementations that take no mask, as if flash attention ran)."""
    if engine == "level by level":
        monkeypatch.setattr("actstore.engine.prompt_reuse.takes_tree_masks", lambda config: False)
    stores = {}
    tokens = {}
    for reuse in (False, True):
        seen, hook = tokens_run_by_first_block(tiny_model.model)
        try:
            results = extract(config(data_dir, tmp_path / str(reuse), dtype="float32", views=views, layers=layers,
                                     site=site, padding_side=padding_side, batch_tokens=100, prompt_reuse=reuse),
                              loaded=tiny_model)
        finally:
            hook.remove()
        stores[reuse], tokens[reuse] = {r.view: open_store(r.url) for r in results}, sum(seen)
    assert tokens[True] < tokens[False]  # the prompts of multi-response examples ran once
    for view in views:
        plain, reused = (stores[False][view].group, stores[True][view].group)
        for name in ("residual", "final_norm", "heads", "loglik"):
            if name in plain:
                np.testing.assert_allclose(reused[name][:], plain[name][:], rtol=1e-4, atol=1e-5, err_msg=f"{view} {name}")
            else:
                assert name not in reused
        for name in ("n_tokens", "last_token", "example", "response"):
            np.testing.assert_array_equal(reused[name][:], plain[name][:], err_msg=f"{view} {name}")


def test_prompt_reuse_in_bfloat16_stays_close_to_the_plain_path(data_dir, tmp_path):
    from actstore.models import ModelSpec, load_model

    model = load_model(ModelSpec("tiny-random", compute_dtype="bfloat16"))
    groups = {}
    for reuse in (False, True):
        [result] = extract(config(data_dir, tmp_path / str(reuse), dtype="float32", compute_dtype="bfloat16",
                                  prompt_reuse=reuse), loaded=model)
        groups[reuse] = open_store(result.url).group
    scale = float(np.abs(groups[False]["residual"][:]).max())
    np.testing.assert_allclose(groups[True]["residual"][:], groups[False]["residual"][:], rtol=0.02, atol=0.02 * scale)
    np.testing.assert_allclose(groups[True]["loglik"][:], groups[False]["loglik"][:], rtol=2e-3, atol=0.05)
