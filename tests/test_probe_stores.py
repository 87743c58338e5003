"""Probes on real (synthetic) stores: sibling views, missing views, saved probes, model checks."""

import json

import numpy as np
import pytest

from common import UserError
import registry
from probes import load_probe, make_probe
from probes.probe import CONFIG_FILE, TENSORS_FILE
from probes.sources import StoreSource, extract_command, sibling_url
from conftest import reseal
from synthetic import planted, store_url, write_stores


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    train = planted(seed=0, strength=6.0, n_heads=3, signal_heads=((2, 0), (3, 2)))
    test = planted(seed=1, split="test", strength=6.0, n_heads=3, signal_heads=((2, 0), (3, 2)),
                   direction=train.direction)
    other = planted(seed=2, dataset="other", split="test", strength=6.0, direction=train.direction)
    plain_only = planted(seed=3, dataset="plain_only", views=("plain",), direction=train.direction)
    wrong_model = planted(seed=4, dataset="other", split="test", model="another-model", hidden=24)
    wider = planted(seed=5, dataset="wide", split="test", model="synthetic-model", hidden=32)
    urls = {name: write_stores(data, root) for name, data in
            [("train", train), ("test", test), ("other", other), ("plain_only", plain_only),
             ("wrong_model", wrong_model), ("wider", wider)]}
    return {"root": root, "urls": urls, "train": train, "test": test}


def test_sibling_url():
    assert sibling_url("/r/m/ds/train.plain.zarr", view="yes") == "/r/m/ds/train.yes.zarr"
    assert sibling_url("memory://r/m/ds/train.plain.zarr/", split="test") == "memory://r/m/ds/test.plain.zarr"
    assert sibling_url("/r/m/ds/train.plain.zarr", view="no", split="test") == "/r/m/ds/test.no.zarr"
    # --site heads extractions (and an earlier version's --limit) keep their extras; the view is always last.
    assert sibling_url("/r/m/ds/train.limit50.heads.plain.zarr", view="yes", split="test") == "/r/m/ds/test.limit50.heads.yes.zarr"
    assert sibling_url("/r/m/ds/train.limit50.plain.zarr", heads=True) == "/r/m/ds/train.limit50.heads.plain.zarr"
    assert sibling_url("/r/m/ds/train.heads.plain.zarr", heads=True) == "/r/m/ds/train.heads.plain.zarr"
    assert sibling_url("/r/somewhere.zarr", view="yes") is None


def test_matches_the_extraction_layout():
    from actstore.store.locations import store_url as extraction_url

    url = extraction_url("/root", "smollm2-135m", "alpaca_mmlu", "train", "plain", site="heads")
    assert sibling_url(url, view="stim") == extraction_url("/root", "smollm2-135m", "alpaca_mmlu", "train", "stim",
                                                           site="heads")
    assert sibling_url(url, split="test") == extraction_url("/root", "smollm2-135m", "alpaca_mmlu", "test", "plain",
                                                            site="heads")
    plain = extraction_url("/root", "smollm2-135m", "alpaca_mmlu", "train", "plain")
    assert sibling_url(plain, heads=True) == extraction_url("/root", "smollm2-135m", "alpaca_mmlu", "train", "plain",
                                                            site="heads")


def test_head_wise_methods_find_the_heads_store(tmp_path):
    data = planted(seed=6, dataset="split_sites", n_heads=3, signal_heads=((2, 1), (3, 2)), strength=6.0)
    residual_only = write_stores(data, tmp_path, with_heads=False)
    write_stores(data, tmp_path, views=("plain",), extras=".heads")
    probe = make_probe("mms-heads", top_k=2).fit(StoreSource(residual_only["plain"]))
    assert sorted(probe.scorer_.sites) == [(2, 1), (3, 2)]


def test_store_source_finds_sibling_views_and_test_split(stores):
    source = StoreSource(stores["urls"]["train"]["plain"])
    assert source.name == "planted/train"
    np.testing.assert_array_equal(source.residual("yes", 2), stores["train"].residual["yes"][2])
    assert source.url("no") == stores["urls"]["train"]["no"]
    test = source.test_split()
    assert test is not None and test.name == "planted/test"
    assert StoreSource(stores["urls"]["other"]["plain"]).test_split() is None  # already a test split


def test_store_source_reads_each_layer_once(stores, monkeypatch):
    source = StoreSource(stores["urls"]["train"]["plain"])
    reads = []
    store = source._store("plain")
    original = store.activations
    monkeypatch.setattr(store, "activations", lambda layer: reads.append(layer) or original(layer))
    for method in ("mms", "lat", "logreg", "random"):
        make_probe(method, 2).fit(source)
    assert reads == [2]
    source.release()
    make_probe("mms", 2).fit(source)
    assert reads == [2, 2]


def test_explicit_view_urls(stores):
    urls = stores["urls"]["train"]
    source = StoreSource([urls["yes"], urls["no"]])
    probe = make_probe("cra", 2).fit(source)
    assert probe.score(StoreSource(stores["urls"]["test"]["plain"]), n_bootstrap=0).accuracy > 0.95


def test_missing_view_names_views_and_extract_command(stores):
    source = StoreSource(stores["urls"]["plain_only"]["plain"])
    with pytest.raises(UserError) as info:
        make_probe("ccs", 2).fit(source)
    message = str(info.value)
    assert "yes,no" in message
    assert "actstore extract --model synthetic-model --dataset plain_only --split train --views yes,no" in message
    assert "\n" not in message


def test_missing_heads_names_site_heads(stores, tmp_path):
    data = planted(seed=7, dataset="noheads")
    urls = write_stores(data, tmp_path, with_heads=False)
    with pytest.raises(UserError, match=r"--views plain --site heads"):
        make_probe("mms-heads").fit(StoreSource(urls["plain"]))


def test_extract_command_format():
    meta = {"model": "smollm2-135m", "dataset": "alpaca_mmlu", "split": "train"}
    assert extract_command(meta, ["stim"]) == "actstore extract --model smollm2-135m --dataset alpaca_mmlu --split train --views stim"


def test_mismatched_siblings_are_refused(stores, tmp_path):
    a = planted(seed=8, dataset="mix")
    b = planted(seed=9, dataset="mix", n_examples=100)  # other sequences under the same name
    write_stores(a, tmp_path, views=("plain",))
    write_stores(b, tmp_path, views=("yes", "no"))
    with pytest.raises(UserError, match="does not match"):
        make_probe("ccs", 2).fit(StoreSource(store_url(tmp_path, "synthetic-model", "mix", "train", "plain")))


@pytest.mark.parametrize("method", registry.store_methods())
def test_saved_probe_scores_identically(method, stores, tmp_path):
    source = StoreSource(stores["urls"]["train"]["plain"])
    layer = 2 if registry.get(method).takes_layer else None
    probe = make_probe(method, layer, top_k=2).fit(source)
    directory = probe.save(tmp_path / "probe")
    assert sorted(p.name for p in directory.iterdir()) == ["complete.json", CONFIG_FILE, TENSORS_FILE]
    document = json.loads((directory / CONFIG_FILE).read_text())
    assert document["method"] == method and document["trained_on"]["model"] == "synthetic-model"
    loaded = load_probe(directory)
    test = StoreSource(stores["urls"]["test"]["plain"])
    np.testing.assert_allclose(loaded.decision_function(test), probe.decision_function(test), rtol=1e-6, atol=1e-6)
    assert loaded.temperature_ == probe.temperature_


def test_probe_files_hold_no_pickles(stores, tmp_path):
    probe = make_probe("ccs", 2).fit(StoreSource(stores["urls"]["train"]["plain"]))
    directory = probe.save(tmp_path / "ccs")
    for path in directory.iterdir():
        assert b"\x80\x04" not in path.read_bytes()[:2]  # pickle protocol header
    json.loads((directory / CONFIG_FILE).read_text())


def test_eval_refuses_other_model_and_hidden_size(stores):
    probe = make_probe("mms", 2).fit(StoreSource(stores["urls"]["train"]["plain"]))
    with pytest.raises(UserError, match="from model .*another-model.* fit on .*synthetic-model"):
        probe.decision_function(StoreSource(stores["urls"]["wrong_model"]["plain"]))
    with pytest.raises(UserError, match="hidden size 32.*hidden size 24"):
        probe.decision_function(StoreSource(stores["urls"]["wider"]["plain"]))


def test_load_probe_errors(tmp_path):
    with pytest.raises(UserError, match="not a saved probe"):
        load_probe(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    (tmp_path / TENSORS_FILE).write_bytes(b"")
    with pytest.raises(UserError, match="incomplete"):
        load_probe(tmp_path)
    reseal(tmp_path)
    with pytest.raises(UserError, match="not valid JSON"):
        load_probe(tmp_path)


def test_layer_errors(stores):
    source = StoreSource(stores["urls"]["train"]["plain"])
    with pytest.raises(UserError, match="layer 40 is out of range"):
        make_probe("mms", 40).fit(source)
    with pytest.raises(UserError, match="needs --layer"):
        make_probe("mms").fit(source)
    with pytest.raises(UserError, match="drop --layer"):
        make_probe("lat-stim", 3).fit(source)
    with pytest.raises(UserError, match="unknown method"):
        make_probe("pca", 3).fit(source)


def test_incomplete_store_is_refused(tmp_path):
    from actstore.store import StoreLayout, create_store

    url = store_url(tmp_path, "m", "d", "train", "plain")
    create_store(url, StoreLayout(n_sequences=4, layers=(0,), hidden_size=2), {
        "example": np.array([0, 0, 1, 1]), "response": np.array([0, 1, 0, 1]), "score": np.array([1, 0, 0, 1.0])},
        {"model": "m", "dataset": "d", "split": "train", "view": "plain"})
    with pytest.raises(UserError, match="incomplete"):
        StoreSource(url)


def test_non_finite_activations_are_a_user_error(tmp_path):
    data = planted(seed=10, dataset="broken")
    data.residual["plain"][2][5, 3] = np.nan
    urls = write_stores(data, tmp_path, views=("plain",))
    with pytest.raises(UserError, match="not finite"):
        make_probe("mms", 2).fit(StoreSource(urls["plain"]))
    make_probe("mms", 1).fit(StoreSource(urls["plain"]))  # other layers are fine


def test_example_without_preferred_response_is_a_user_error(tmp_path):
    data = planted(seed=11, dataset="unlabelled")
    data.score[data.example == 4] = 0.0
    urls = write_stores(data, tmp_path, views=("plain",))
    with pytest.raises(UserError, match="no best response"):
        StoreSource(urls["plain"])
