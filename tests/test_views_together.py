"""Views of one split extracted together (each shared token prefix run once for all of them) give
the stores they get one at a time, up to the float rounding of other batch shapes, and a resumed
multi-view extraction computes only what is missing."""

import numpy as np
import pytest
import torch

from actstore import open_store
from actstore.engine.extraction import extract
from actstore.store import ActivationStore
from test_extract import config, data_dir  # noqa: F401, F811  (data_dir is a fixture)

VIEWS = ("plain", "yes", "no", "stim")


@pytest.fixture(scope="module")
def tiny_bfloat16():
    from actstore.models import ModelSpec, load_model

    return load_model(ModelSpec("tiny-random", compute_dtype="bfloat16"))


def all_arrays(url) -> dict[str, np.ndarray]:
    group = open_store(url).group
    return {name: group[name][:] for name in group.array_keys() if not name.startswith("block")}


def assert_same_values(got: dict, expected: dict, label: str, *, bfloat16: bool = False) -> None:
    """Integers (token counts, labels) bitwise; activations and log-likelihoods within the rounding
    of other batch shapes: float32 as in the prompt-reuse parity test, bfloat16 within 2% of each
    array's scale."""
    assert sorted(got) == sorted(expected)
    for name, values in expected.items():
        if not np.issubdtype(values.dtype, np.floating):
            np.testing.assert_array_equal(got[name], values, err_msg=f"{label} {name}")
        elif bfloat16:
            scale = float(np.abs(values).max())
            rtol, atol = (2e-3, 0.05) if name == "loglik" else (0.02, 0.02 * scale)
            np.testing.assert_allclose(got[name], values, rtol=rtol, atol=atol, err_msg=f"{label} {name}")
        else:
            np.testing.assert_allclose(got[name], values, rtol=1e-4, atol=1e-5, err_msg=f"{label} {name}")


def kill_at_block(monkeypatch, killed: int):
    """Make every store's write of block ``killed`` raise KeyboardInterrupt; return the real write."""
    real_write = ActivationStore.write_block

    def write_block(self, block, **arrays):
        if block == killed:
            raise KeyboardInterrupt
        real_write(self, block, **arrays)

    monkeypatch.setattr(ActivationStore, "write_block", write_block)
    return real_write


def count_tokens(model):
    """Token slots (padding included) and passes through the first block."""
    seen = []
    hook = model.model.layers[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[:2].numel()))
    return seen, hook


def run(loaded, cfg):
    seen, hook = count_tokens(loaded.model)
    try:
        results = extract(cfg, loaded=loaded)
    finally:
        hook.remove()
    return results, seen


@pytest.mark.parametrize("dtype, layers, site", [("float32", "all", "heads"), ("bfloat16", "0,2", "residual")])
def test_views_together_equal_views_one_at_a_time(tiny_model, tiny_bfloat16, data_dir, tmp_path, dtype, layers, site):
    loaded = tiny_model if dtype == "float32" else tiny_bfloat16
    settings = dict(dtype="float32", compute_dtype=dtype, layers=layers, site=site, batch_tokens=100, prompt_reuse=True)
    together, together_seen = run(loaded, config(data_dir, tmp_path / "together", views=VIEWS, **settings))
    alone_seen = []
    for view, result in zip(VIEWS, together):
        [single], seen = run(loaded, config(data_dir, tmp_path / view, views=(view,), **settings))
        alone_seen += seen
        assert result.view == view and result.status == "created" and "/together/" in result.url
        assert_same_values(all_arrays(result.url), all_arrays(single.url), view, bfloat16=dtype == "bfloat16")
        assert open_store(result.url).meta["completion"]["views_together"] == ",".join(VIEWS)
    # Every shared prefix ran once instead of once per view: fewer tokens.
    assert sum(together_seen) < sum(alone_seen)


def test_resume_computes_only_what_each_view_misses(tiny_model, data_dir, tmp_path, monkeypatch):
    settings = dict(dtype="float32", prompt_reuse=True, batch_tokens=100)
    clean = {r.view: r.url for r in extract(config(data_dir, tmp_path / "clean", views=("plain", "yes", "no"), **settings),
                                            loaded=tiny_model)}
    extract(config(data_dir, tmp_path / "cut", views=("yes",), **settings), loaded=tiny_model)  # yes: complete
    real_write = kill_at_block(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        extract(config(data_dir, tmp_path / "cut", views=("plain",), **settings), loaded=tiny_model)  # plain: blocks 0, 1
    written = []
    monkeypatch.setattr(ActivationStore, "write_block", lambda self, block, **a: (
        written.append((self.meta["view"], block)), real_write(self, block, **a)))
    results, seen = run(tiny_model, config(data_dir, tmp_path / "cut", views=("plain", "yes", "no"), **settings))
    assert [(r.view, r.status, r.blocks_computed) for r in results] == [("plain", "resumed", 2), ("yes", "complete", 0),
                                                                          ("no", "created", 4)]
    assert sorted(written) == [("no", 0), ("no", 1), ("no", 2), ("no", 3), ("plain", 2), ("plain", 3)]
    for result in results:
        assert_same_values(all_arrays(result.url), all_arrays(clean[result.view]), result.view)
    # Blocks 0 and 1 ran their prompts for the no view only; blocks 2 and 3 once for plain and no together.
    _, no_alone = run(tiny_model, config(data_dir, tmp_path / "no-alone", views=("no",), **settings))
    assert sum(seen) < sum(no_alone) + sum(run(tiny_model, config(data_dir, tmp_path / "plain-alone", views=("plain",),
                                                                   **settings))[1])


def test_a_view_resumed_with_other_blocks_is_filled_apart(tiny_model, data_dir, tmp_path, monkeypatch):
    settings = dict(dtype="float32", prompt_reuse=True, batch_tokens=100)
    clean = {r.view: r.url for r in extract(config(data_dir, tmp_path / "clean", views=("plain", "no"), block_size=3,
                                                   **settings), loaded=tiny_model)}
    real_write = kill_at_block(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        extract(config(data_dir, tmp_path / "cut", views=("plain",), block_size=3, **settings), loaded=tiny_model)
    monkeypatch.setattr(ActivationStore, "write_block", real_write)
    results = extract(config(data_dir, tmp_path / "cut", views=("plain", "no"), block_size=4, **settings),
                      loaded=tiny_model)
    assert [(r.view, r.status, r.blocks_total) for r in results] == [("plain", "resumed", 5), ("no", "created", 4)]
    for result in results:
        assert_same_values(all_arrays(result.url), all_arrays(clean[result.view]), result.view)
