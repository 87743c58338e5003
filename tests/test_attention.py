"""``--attention``: which implementation each command's model runs, and its one-line refusals.

That the tree's masks give transformers' numbers under each implementation is tests/test_families.py's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import actstore.models.attention as attention
from actstore.models.attention import FLEX_RECOMPILE_LIMIT, set_attention, wanted_attention
from actstore.models import ModelSpec
from common import UserError
from model_families import tiny_family_model
from test_bad_input import fails


@pytest.fixture
def flex_on_gpus(monkeypatch):
    """As on a CUDA machine whose torch compiles flex attention (this one has no GPU or triton)."""
    monkeypatch.setattr(attention, "flex_attention_available", lambda: True)
    with torch._dynamo.config.patch(recompile_limit=8):  # restored after the test
        yield


def test_auto_takes_flex_attention_only_on_one_gpu_and_only_for_commands_that_do_not_train(flex_on_gpus):
    assert wanted_attention("auto", "cuda:0", trains=False) == "flex_attention"
    assert wanted_attention("auto", "cuda:0", trains=True) is None
    assert wanted_attention("auto", "cuda:0", trains=False, several_gpus=True) is None
    assert wanted_attention("auto", "cpu", trains=False) is None
    assert wanted_attention("sdpa", "cuda:0", trains=False) == "sdpa"
    assert wanted_attention("flex_attention", "cuda:0", trains=True) == "flex_attention"


def test_auto_takes_flex_attention_only_where_tree_masks_are_in_play(flex_on_gpus):
    """--no-prompt-reuse: no block of a mask to skip, so no flex attention compiles to pay for."""
    assert wanted_attention("auto", "cuda:0", trains=False, tree_masks=True) == "flex_attention"
    assert wanted_attention("auto", "cuda:0", trains=False, tree_masks=False) is None
    assert wanted_attention("flex_attention", "cuda:0", trains=False, tree_masks=False) == "flex_attention"


def test_flex_attention_over_several_gpus_is_refused_in_one_line():
    with pytest.raises(UserError, match="cannot serve a model placed over several GPUs"):
        wanted_attention("flex_attention", "cuda:0", trains=False, several_gpus=True)
    assert wanted_attention("sdpa", "cuda:0", trains=False, several_gpus=True) == "sdpa"


def test_auto_keeps_the_family_own_where_torch_cannot_compile_flex_attention(monkeypatch):
    monkeypatch.setattr(attention, "flex_attention_available", lambda: False)
    assert wanted_attention("auto", "cuda:0", trains=False) is None


@pytest.mark.parametrize("family, expected", [("llama", "flex_attention"), ("gpt2", "sdpa"), ("falcon", "sdpa")])
def test_auto_on_a_gpu_falls_back_to_the_family_own_where_the_family_lacks_flex(flex_on_gpus, family, expected):
    import copy

    model = copy.deepcopy(tiny_family_model(family).model)
    assert set_attention(model, family, "auto", "cuda:0", trains=False) == expected
    assert model.config._attn_implementation == expected
    if expected == "flex_attention":  # so that dynamo does not fall back to uncompiled flex attention
        assert torch._dynamo.config.recompile_limit == FLEX_RECOMPILE_LIMIT
    else:
        assert torch._dynamo.config.recompile_limit == 8


@pytest.mark.parametrize("family, requested", [("gpt2", "flex_attention"), ("gemma2", "sdpa"), ("falcon", "eager")])
def test_an_implementation_the_family_lacks_is_refused_in_one_line(family, requested):
    import copy

    model = copy.deepcopy(tiny_family_model(family).model)
    own = model.config._attn_implementation
    with pytest.raises(UserError, match=f"^{family}: --attention {requested} is not available for "
                                        f"{type(model).__name__} \\(") as refused:
        set_attention(model, family, requested, "cpu", trains=False)
    assert "\n" not in str(refused.value)
    assert model.config._attn_implementation == own


def test_the_family_own_is_kept_on_a_cpu():
    """Gemma 2 has no sdpa: auto keeps its eager attention rather than failing."""
    import copy

    model = copy.deepcopy(tiny_family_model("gemma2").model)
    assert set_attention(model, "gemma2", "auto", "cpu", trains=False) == "eager"


def test_flex_attention_cannot_train_off_a_gpu():
    with pytest.raises(UserError, match="--attention flex_attention cannot train on cpu: torch has no flex attention "
                                        "backward off CUDA"):
        ModelSpec.requested("tiny-random", device="cpu", attention="flex_attention", trains=True)
    ModelSpec.requested("tiny-random", device="cpu", attention="flex_attention")  # forward only: allowed


def test_commands_that_train_refuse_flex_on_a_cpu_before_any_work(tmp_path):
    from cli import finetune, genies
    from conftest import TOY_EXAMPLES, write_distribution

    data = write_distribution(tmp_path / "data", "toy", train=TOY_EXAMPLES, test=TOY_EXAMPLES)
    fails(finetune, ["train", "--model", "tiny-random", "--method", "lora", "--dataset", "toy", "--data-dir", data,
                     "--out", tmp_path / "ft", "--attention", "flex_attention", "--device-map", "cpu"],
          "cannot train on cpu")
    fails(genies, ["run", "--model", "tiny-random", "--methods", "lora", "--out", tmp_path / "run",
                   "--attention", "flex_attention", "--device-map", "cpu"], "cannot train on cpu")
    assert not (tmp_path / "ft").exists() and not (tmp_path / "run").exists()


def test_an_unknown_attention_is_refused_in_one_line(tmp_path):
    from cli import actstore

    fails(actstore, ["extract", "--model", "tiny-random", "--dataset", "toy", "--out", tmp_path / "s",
                     "--attention", "flash"], "--attention", "flash")


def extracted(tmp_path, attention: str):
    """tiny-random's float32 store of the toy test split, extracted under ``--attention attention``."""
    from click.testing import CliRunner

    from actstore.store import open_store
    from cli import actstore
    from conftest import TOY_EXAMPLES, write_distribution

    data = write_distribution(tmp_path / "data", "toy", train=TOY_EXAMPLES, test=TOY_EXAMPLES)
    out = tmp_path / attention
    result = CliRunner().invoke(actstore, ["extract", "--model", "tiny-random", "--dataset", "toy", "--split", "test",
                                           "--data-dir", str(data), "--out", str(out), "--no-progress",
                                           "--compute-dtype", "float32", "--dtype", "float32",
                                           "--attention", attention])
    assert result.exit_code == 0, result.output
    (store,) = out.rglob("*.plain.zarr")
    return open_store(str(store))


@pytest.mark.parametrize("requested, runs", [("eager", "eager"), ("flex_attention", "flex_attention")])
def test_each_attention_extracts_the_same_values_and_the_store_records_it(tmp_path, requested, runs):
    """Through the command line (flex attention on the CPU too: forward only), against the default's store."""
    from click.testing import CliRunner

    from cli import actstore

    default, store = extracted(tmp_path, "auto"), extracted(tmp_path, requested)
    assert default.meta["config"]["attention"] == "sdpa" and store.meta["config"]["attention"] == runs
    for layer in store.layers:
        want = default.activations(layer)
        scale = np.sqrt((want ** 2).mean())
        assert np.abs(store.activations(layer) - want).max() < 1e-4 * scale, layer
    np.testing.assert_allclose(store.sequences()["loglik"], default.sequences()["loglik"], rtol=1e-5, atol=1e-3)
    shown = CliRunner().invoke(actstore, ["info", store.url])
    assert f"   attention: {runs}\n" in shown.output, shown.output
