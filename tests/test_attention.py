"""``--attention``: which implementation each command's model runs, and its one-line refusals.

That the tree's masks give transformers' numbers under each implementation is tests/test_families.py's.
"""

from __future__ import annotations

import pytest
import torch

import actstore.attention as attention
from actstore.attention import FLEX_RECOMPILE_LIMIT, set_attention, wanted_attention
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


@pytest.mark.parametrize("requested, runs", [("auto", "sdpa"), ("eager", "eager")])
def test_a_store_records_the_attention_it_was_computed_with(tmp_path, requested, runs):
    from click.testing import CliRunner

    from actstore.store import open_store
    from cli import actstore
    from conftest import TOY_EXAMPLES, write_distribution

    data = write_distribution(tmp_path / "data", "toy", train=TOY_EXAMPLES, test=TOY_EXAMPLES)
    result = CliRunner().invoke(actstore, ["extract", "--model", "tiny-random", "--dataset", "toy", "--split", "test",
                                           "--data-dir", str(data), "--out", str(tmp_path / "s"), "--no-progress",
                                           "--attention", requested])
    assert result.exit_code == 0, result.output
    (store,) = (tmp_path / "s").rglob("*.plain.zarr")
    assert open_store(str(store)).meta["config"]["attention"] == runs
    shown = CliRunner().invoke(actstore, ["info", str(store)])
    assert f"   attention: {runs}\n" in shown.output, shown.output
