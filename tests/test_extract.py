"""Extraction end to end: parity with an unbatched float32 forward pass, resume, re-runs, float16 range."""

import json

import numpy as np
import pytest
import torch

from actstore import open_store
from actstore.models.compute_dtype import resolve_compute_dtype
from common import UserError
from actstore.engine.extraction import ExtractConfig, extract
from actstore.models import tiny_random_llama
from actstore.store import ActivationStore
from actstore.engine.views import VIEWS, encode
from conftest import TOY_EXAMPLES, write_distribution

TOY = TOY_EXAMPLES


@pytest.fixture
def data_dir(tmp_path):
    return write_distribution(tmp_path / "data", "toy", train=TOY[:3], test=TOY)


def config(data_dir, out, **overrides) -> ExtractConfig:
    settings = dict(model="tiny-random", datasets=("toy",), splits=("test",), data_dir=str(data_dir), out=str(out),
                    block_size=4, progress=False, compute_dtype="float32")
    return ExtractConfig(**{**settings, **overrides})


def reference(loaded, view_name: str, examples=TOY):
    """Per sequence (file order): unpadded float32 forward pass, one sequence at a time."""
    model, view = loaded.model, VIEWS[view_name]
    n_heads = model.config.num_attention_heads
    heads: dict[int, torch.Tensor] = {}
    hooks = [block.self_attn.o_proj.register_forward_pre_hook(
        lambda module, args, layer=i + 1: heads.__setitem__(layer, args[0][0, -1].reshape(n_heads, -1)))
        for i, block in enumerate(model.model.layers)]
    model.config.tie_last_hidden_states = False  # hidden_states[-1]: output of the last block, before the norm
    rows = []
    try:
        with torch.inference_mode():
            for item in examples:
                for response in item["responses"]:
                    prompt_ids, continuation = encode(loaded.tokenizer, view, item["prompt"], response)
                    ids = prompt_ids + continuation
                    out = model(torch.tensor([ids]), output_hidden_states=True)
                    logprobs = torch.log_softmax(out.logits[0].double(), dim=-1)
                    loglik = sum(float(logprobs[c - 1, ids[c]]) for c in range(len(prompt_ids), len(ids)))
                    hidden = [h[0, -1].numpy().copy() for h in out.hidden_states]
                    rows.append({"hidden": hidden, "final_norm": model.model.norm(out.hidden_states[-1])[0, -1].numpy(),
                                 "heads": {layer: t.numpy().copy() for layer, t in heads.items()}, "loglik": loglik,
                                 "n_tokens": len(ids), "last_token": ids[-1], "score": item["responses"][response]})
    finally:
        del model.config.tie_last_hidden_states
        for hook in hooks:
            hook.remove()
    return rows


def assert_close(stored: np.ndarray, expected: np.ndarray, dtype: str, what: str):
    if dtype == "float32":
        np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-5, err_msg=what)
    else:  # float16 keeps ~11 bits: relative error 2**-11, plus the batched-vs-single compute difference
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(stored, expected, rtol=1e-3, atol=1e-4 * scale, err_msg=what)


def assert_matches_reference(store, rows, dtype, *, loglik: bool):
    seqs = store.sequences()
    assert len(seqs["score"]) == len(rows)
    np.testing.assert_array_equal(seqs["score"], [r["score"] for r in rows])
    np.testing.assert_array_equal(seqs["n_tokens"], [r["n_tokens"] for r in rows])
    np.testing.assert_array_equal(seqs["last_token"], [r["last_token"] for r in rows])
    for layer in store.layers:
        assert_close(store.activations(layer), np.stack([r["hidden"][layer] for r in rows]), dtype, f"layer {layer}")
    if store.meta["with_final_norm"]:
        assert_close(store.final_norm(), np.stack([r["final_norm"] for r in rows]), dtype, "final norm")
    for layer in store.meta["head_layers"]:
        assert_close(store.head_activations(layer), np.stack([r["heads"][layer] for r in rows]), dtype, f"heads {layer}")
    if loglik:
        np.testing.assert_allclose(seqs["loglik"], [r["loglik"] for r in rows], rtol=1e-5, atol=1e-4)
    else:
        assert "loglik" not in seqs


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("batch_tokens", [1, 90, 10**6])  # one sequence per batch, a few, the whole block
def test_tiny_parity_float32(tiny_model, data_dir, tmp_path, padding_side, batch_tokens):
    cfg = config(data_dir, tmp_path / "stores", dtype="float32", padding_side=padding_side, batch_tokens=batch_tokens)
    [result] = extract(cfg, loaded=tiny_model)
    store = open_store(result.url)
    assert store.meta["layers"] == [0, 1, 2, 3, 4] and store.meta["complete"]
    assert (store.meta["config"]["batch_tokens"], store.meta["completion"]["batch_tokens"]) == (batch_tokens,
                                                                                                 batch_tokens)
    assert_matches_reference(store, reference(tiny_model, "plain"), "float32", loglik=True)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_tiny_parity_float16_heads_and_views(tiny_model, data_dir, tmp_path, padding_side):
    cfg = config(data_dir, tmp_path / "stores", views=("plain", "yes"), site="heads", padding_side=padding_side,
                 batch_tokens=120)
    results = extract(cfg, loaded=tiny_model)
    assert [r.url.rsplit("/", 1)[1] for r in results] == ["test.heads.plain.zarr", "test.heads.yes.zarr"]
    for result, view in zip(results, ["plain", "yes"]):
        store = open_store(result.url)
        assert store.meta["dtype"] == "float16" and store.meta["head_layers"] == [1, 2, 3, 4]
        assert store.head_activations(2).shape == (13, 4, 16)
        assert_matches_reference(store, reference(tiny_model, view), "float16", loglik=view == "plain")


@pytest.fixture(scope="module")
def tiny_model_bfloat16():
    from actstore.models import ModelSpec, load_model

    return load_model(ModelSpec("tiny-random", compute_dtype="bfloat16"))


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_tiny_parity_bfloat16_compute(tiny_model, tiny_model_bfloat16, data_dir, tmp_path, padding_side):
    """bfloat16 keeps 8 significant bits: each value within ~2% of its layer's scale of the float32 reference."""
    cfg = config(data_dir, tmp_path / "stores", dtype="float32", compute_dtype="bfloat16", padding_side=padding_side,
                 batch_tokens=90)
    [result] = extract(cfg, loaded=tiny_model_bfloat16)
    store = open_store(result.url)
    assert store.meta["identity"]["compute_dtype"] == store.meta["config"]["compute_dtype"] == "bfloat16"
    rows = reference(tiny_model, "plain")
    for layer in store.layers:
        expected = np.stack([r["hidden"][layer] for r in rows])
        np.testing.assert_allclose(store.activations(layer), expected, rtol=0.02, atol=0.02 * np.abs(expected).max(),
                                   err_msg=f"layer {layer}")
    expected = np.stack([r["final_norm"] for r in rows])
    np.testing.assert_allclose(store.final_norm(), expected, rtol=0.02, atol=0.02 * np.abs(expected).max())
    np.testing.assert_allclose(store.sequences()["loglik"], [r["loglik"] for r in rows], rtol=2e-3, atol=0.05)


def test_compute_dtype_of_a_passed_model_must_match(tiny_model, data_dir, tmp_path):
    with pytest.raises(UserError, match="computes in float32, not the requested --compute-dtype bfloat16"):
        extract(config(data_dir, tmp_path / "s", compute_dtype="bfloat16"), loaded=tiny_model)
    [result] = extract(config(data_dir, tmp_path / "s", compute_dtype="auto"), loaded=tiny_model)
    assert open_store(result.url).meta["identity"]["compute_dtype"] == "float32"


def test_forward_stops_after_deepest_requested_layer(tiny_model, data_dir, tmp_path):
    ran = []
    hooks = [block.register_forward_hook(lambda *a, i=i: ran.append(i)) for i, block in enumerate(tiny_model.model.model.layers)]
    try:
        [result] = extract(config(data_dir, tmp_path / "s", views=("yes",), layers="0,2", dtype="float32"), loaded=tiny_model)
    finally:
        for hook in hooks:
            hook.remove()
    assert set(ran) == {0, 1}  # blocks 2 and 3 (layers 3, 4) never ran
    store = open_store(result.url)
    assert store.layers == [0, 2] and not store.meta["with_final_norm"]
    with pytest.raises(UserError, match="no final-norm activations"):
        store.final_norm()
    assert_matches_reference(store, reference(tiny_model, "yes"), "float32", loglik=False)


def test_plain_view_runs_full_depth_for_the_loglik(tiny_model, data_dir, tmp_path):
    [result] = extract(config(data_dir, tmp_path / "s", layers="1", dtype="float32"), loaded=tiny_model)
    store = open_store(result.url)
    assert store.layers == [1] and store.meta["with_final_norm"]
    assert_matches_reference(store, reference(tiny_model, "plain"), "float32", loglik=True)


def store_arrays(url) -> dict[str, np.ndarray]:
    group = open_store(url).group
    return {name: group[name][:] for name in ("residual", "final_norm", "loglik", "n_tokens", "last_token", "example")}


def test_resume_finishes_only_missing_blocks_and_equals_uninterrupted_run(tiny_model, data_dir, tmp_path, monkeypatch):
    [whole] = extract(config(data_dir, tmp_path / "whole"), loaded=tiny_model)
    real_write = ActivationStore.write_block
    written = []

    def killed_at_block_2(self, block, **arrays):
        if block == 2:
            raise KeyboardInterrupt  # the process dies while computing/writing block 2
        written.append(block)
        real_write(self, block, **arrays)

    monkeypatch.setattr(ActivationStore, "write_block", killed_at_block_2)
    with pytest.raises(KeyboardInterrupt):
        extract(config(data_dir, tmp_path / "cut"), loaded=tiny_model)
    url = whole.url.replace("/whole/", "/cut/")
    with pytest.raises(UserError, match=r"incomplete store \(2/4 blocks written\)"):
        open_store(url)
    monkeypatch.setattr(ActivationStore, "write_block", real_write)

    spy = []
    monkeypatch.setattr(ActivationStore, "write_block", lambda self, block, **a: (spy.append(block), real_write(self, block, **a)))
    [resumed] = extract(config(data_dir, tmp_path / "cut"), loaded=tiny_model)
    assert (resumed.status, resumed.blocks_computed, resumed.blocks_total, resumed.sequences_computed) == ("resumed", 2, 4, 5)
    assert written == [0, 1] and spy == [2, 3]
    expected, got = store_arrays(whole.url), store_arrays(url)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)  # bitwise: same blocks, same batches
    assert open_store(url).meta["completion"]["run_status"] == "resumed"
    # not asked for: "auto" in the settings, and the budget the passes took (a CPU's 4096) where it was used
    assert (open_store(url).meta["config"]["batch_tokens"], open_store(url).meta["completion"]["batch_tokens"]) == (
        "auto", 4096)


def test_rerun_is_a_no_op_without_loading_the_model(tiny_model, data_dir, tmp_path, monkeypatch):
    [first] = extract(config(data_dir, tmp_path / "s"), loaded=tiny_model)
    files = sorted((tmp_path / "s").rglob("*"))
    stamps = [(p, p.stat().st_mtime_ns) for p in files if p.is_file()]

    def no_model(*args, **kwargs):
        raise AssertionError("a finished store must not load the model")

    monkeypatch.setattr("actstore.models.loading.load_model", no_model)
    [again] = extract(config(data_dir, tmp_path / "s"))
    assert (again.url, again.status, again.blocks_computed) == (first.url, "complete", 0)
    assert [(p, p.stat().st_mtime_ns) for p, _ in stamps] == stamps and sorted((tmp_path / "s").rglob("*")) == files


def test_other_extraction_in_the_same_place_is_refused_unless_overwrite(tiny_model, data_dir, tmp_path):
    extract(config(data_dir, tmp_path / "s"), loaded=tiny_model)
    with pytest.raises(UserError, match=r"holds a different extraction \(layers: stored \[0, 1, 2, 3, 4\], requested \[0, 1\]\)"):
        extract(config(data_dir, tmp_path / "s", layers="0,1"), loaded=tiny_model)
    with pytest.raises(UserError, match="dtype: stored float16, requested float32.*--overwrite"):
        extract(config(data_dir, tmp_path / "s", dtype="float32"), loaded=tiny_model)
    [replaced] = extract(config(data_dir, tmp_path / "s", layers="0,1", overwrite=True), loaded=tiny_model)
    assert replaced.status == "created" and open_store(replaced.url).layers == [0, 1]
    [kept] = extract(config(data_dir, tmp_path / "s", layers="0,1", overwrite=True), loaded=tiny_model)
    assert kept.status == "complete"  # --overwrite replaces only a different extraction
    # --limit reads what the one store holds: no second store for fewer examples
    [limited] = extract(config(data_dir, tmp_path / "s", layers="0,1", limit=2), loaded=tiny_model)
    assert limited.url == kept.url and limited.status == "complete" and limited.sequences_computed == 0


def test_float16_store_refuses_values_outside_its_range(data_dir, tmp_path):
    loaded = tiny_random_llama()
    loaded.model.eval()
    with torch.no_grad():
        loaded.model.model.embed_tokens.weight.mul_(1e7)  # embeddings (layer 0) far beyond float16's 65504
    with pytest.raises(UserError, match=r"residual layer 0, sequence \d+: value .* outside the float16 range.*--dtype float32"):
        extract(config(data_dir, tmp_path / "s"), loaded=loaded)
    store = open_store(f"{tmp_path}/s/tiny-random/toy/test.plain.zarr", require_complete=False)
    assert not store.meta["complete"] and not store.blocks_done().any()
    assert np.isfinite(store.group["residual"][:]).all()  # nothing written, no silent infinities
    [result] = extract(config(data_dir, tmp_path / "s", dtype="float32", overwrite=True), loaded=loaded)
    assert np.abs(open_store(result.url).activations(0)).max() > 65504


def test_memory_url_round_trip(tiny_model, data_dir):
    [result] = extract(config(data_dir, "memory://extract-test/stores", layers="0,4"), loaded=tiny_model)
    assert result.url == "memory://extract-test/stores/tiny-random/toy/test.plain.zarr"
    assert open_store(result.url).activations(4).shape == (13, 64)


# ----------------------------------------------------------------------------- command line


def test_cli_extract_info_ls(data_dir, tmp_path):
    from click.testing import CliRunner

    from cli import actstore

    runner = CliRunner()
    args = ["extract", "--model", "tiny-random", "--dataset", "toy", "--data-dir", str(data_dir), "--split", "train,test",
            "--out", str(tmp_path / "s"), "--layers", "0,2:3", "--no-progress"]
    first = runner.invoke(actstore, args)
    assert first.exit_code == 0, first.output
    paths = [line.split()[0] for line in first.output.splitlines() if ".zarr" in line]
    assert paths == [f"{tmp_path}/s/tiny-random/toy/{split}.plain.zarr" for split in ("train", "test")]
    dtype = resolve_compute_dtype("auto", "cpu")
    assert f"computing in {dtype} (log-likelihood head in float32)" in first.output
    assert "created" in first.output
    again = runner.invoke(actstore, args)
    assert again.exit_code == 0 and again.output.count("(complete: ") == 2 and "computing in" not in again.output

    info = runner.invoke(actstore, ["info", paths[1], "--json"])
    facts = json.loads(info.output)
    assert facts["layers"] == "0,2,3" and facts["sequences"] == 13 and facts["examples"] == 5
    assert facts["complete"] and facts["size_bytes"] > 0 and facts["hidden_size"] == 64
    assert facts["dtype"] == "float16" and facts["compute_dtype"] == dtype
    listing = runner.invoke(actstore, ["ls", str(tmp_path / "s")])
    assert listing.exit_code == 0 and listing.output.count("complete") == 2 and "2 stores" in listing.output


@pytest.mark.parametrize("extra, message", [
    (["--layers", "9"], "layer 9 is out of range for tiny-random: layers are 0..4"),
    (["--views", "plain,maybe"], "unknown view 'maybe'"),
    (["--dataset", "tyo"], "unknown dataset 'tyo' (did you mean 'toy'?)"),
    (["--split", "dev"], "unknown split 'dev'"),
    (["--model", "no-such-org/no-such-model"], "cannot resolve model 'no-such-org/no-such-model'"),
    (["--batch-tokens", "0"], "--batch-tokens must be at least 1"),
])
def test_cli_errors_are_one_line_exit_2(data_dir, tmp_path, extra, message):
    from click.testing import CliRunner

    from cli import actstore

    args = ["extract", "--model", "tiny-random", "--dataset", "toy", "--data-dir", str(data_dir), "--out",
            str(tmp_path / "s"), "--no-progress"]
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    result = CliRunner().invoke(actstore, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_cli_info_of_nothing_is_an_error(tmp_path):
    from click.testing import CliRunner

    from cli import actstore

    result = CliRunner().invoke(actstore, ["info", str(tmp_path / "none.plain.zarr")])
    assert result.exit_code == 2 and "no activation store here" in result.output


# ----------------------------------------------------------------------------- bundled model


@pytest.mark.bundled
@pytest.mark.parametrize("padding_side, site", [("right", "heads"), ("left", "residual")])
def test_bundled_parity(bundled_model, tmp_path, padding_side, site):
    examples = TOY[:3]
    data = write_distribution(tmp_path / "data", "toy", train=examples, test=examples)
    cfg = ExtractConfig(model="smollm2-135m", datasets=("toy",), splits=("test",), data_dir=str(data),
                        out=str(tmp_path / "s"), padding_side=padding_side, site=site, batch_tokens=100, progress=False)
    [result] = extract(cfg, loaded=bundled_model)
    store = open_store(result.url)
    assert store.meta["layers"] == list(range(31)) and store.meta["model_id"] == bundled_model.model_id
    assert_matches_reference(store, reference(bundled_model, "plain", examples), "float16", loglik=True)
