"""One store per (model, dataset, split, view), grown on demand: a larger --limit computes only the missing
examples and gives the store a fresh extraction of that limit writes; a smaller one reads a prefix; stores
named with their limit by earlier versions are read, adopted and migrated."""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from actstore import open_store
from actstore.engine.extraction import ExtractConfig, extract
from actstore.engine.sequence_table import sequence_table
from actstore.store.growth import grow
from cli import actstore, probes
from conftest import write_distribution
from distributions.data import load_split
from probes import MMS

EXAMPLES = [{"prompt": f"Question {i}: what comes after {i}?\n### Response:\n",
             "responses": {f"{i + 1}": 1.0, f"{i + 2}, or so": 0.0, **({"none": 0.0} if i % 3 == 0 else {})}}
            for i in range(24)]
VIEWS = ("plain", "yes")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_distribution(tmp_path_factory.mktemp("data"), "count", train=EXAMPLES, test=EXAMPLES[:12])


def run(data, out, limit, tiny_model, splits=("train",), **options):
    config = ExtractConfig(model="tiny-random", datasets=("count",), splits=splits, views=VIEWS,
                           data_dir=str(data), out=str(out), limit=limit, dtype="float32", progress=False, **options)
    return {result.view: result for result in extract(config, loaded=tiny_model)}


def url(out, view="plain", split="train"):
    return str(out / "tiny-random" / "count" / f"{split}.{view}.zarr")


def n_sequences(limit):
    return sum(len(example["responses"]) for example in EXAMPLES[:limit])


def assert_same_store(grown, fresh, bitwise=True):
    """Every array of the two stores holds the same values (their ids, times and salts aside): the same bytes,
    or, where the passes packed other sequences together, the same up to float32 rounding."""
    a, b = open_store(grown), open_store(fresh)
    assert a.verify() == [] and a.meta["n_sequences"] == b.meta["n_sequences"] and a.meta["limit"] == b.meta["limit"]
    assert a.meta.get("kept_rows") is None and a.meta["identity"] == b.meta["identity"]
    for name in ("n_tokens", "last_token", "example", "response", "score", "prompt_text", "response_text"):
        assert np.array_equal(a.read(name), b.read(name)), name
    computed = [(f"layer {layer}", a.activations(layer), b.activations(layer)) for layer in a.layers]
    computed += [(name, a.read(name), b.read(name)) for name in ("final_norm", "loglik") if name in a.group]
    for name, x, y in computed:
        if bitwise:
            assert x.tobytes() == y.tobytes(), name
        else:
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-5 * float(np.sqrt(np.mean(y ** 2))), err_msg=name)


# One sequence per pass computes each sequence alike whatever else is extracted: the grown store is the fresh
# one byte for byte. Packed passes (the default) round the same sequence differently in other company.
ONE_PER_PASS = dict(prompt_reuse=False, batch_tokens=1)


@pytest.mark.parametrize("block_size, options", [(512, ONE_PER_PASS), (8, ONE_PER_PASS), (8, {})],
                         ids=["one-block", "blocks", "packed"])
def test_a_larger_limit_computes_only_the_new_examples(data, tmp_path, tiny_model, block_size, options):
    first = run(data, tmp_path / "grown", 10, tiny_model, block_size=block_size, **options)
    assert {r.sequences_computed for r in first.values()} == {n_sequences(10)}
    grown = run(data, tmp_path / "grown", 20, tiny_model, block_size=block_size, **options)
    assert {r.status for r in grown.values()} == {"grown"}
    assert {r.sequences_computed for r in grown.values()} == {n_sequences(20) - n_sequences(10)}  # counted
    again = run(data, tmp_path / "grown", 15, tiny_model, block_size=block_size, **options)  # fewer: nothing to do
    assert {(r.status, r.sequences_computed) for r in again.values()} == {("complete", 0)}
    run(data, tmp_path / "fresh", 20, tiny_model, block_size=block_size, **options)
    for view in VIEWS:
        assert_same_store(url(tmp_path / "grown", view), url(tmp_path / "fresh", view), bitwise=bool(options))
    whole = run(data, tmp_path / "grown", None, tiny_model, block_size=block_size, **options)
    assert {r.sequences_computed for r in whole.values()} == {n_sequences(24) - n_sequences(20)}
    assert open_store(url(tmp_path / "grown")).meta["limit"] is None


def test_a_growth_killed_after_resizing_resumes_and_damaged_kept_rows_are_computed_again(data, tmp_path, tiny_model):
    run(data, tmp_path / "grown", 10, tiny_model, **ONE_PER_PASS)
    table = sequence_table(load_split(data, "count", "train"), 20)
    store = grow(open_store(url(tmp_path / "grown")), table.labels(), 20)  # then killed: no block written
    assert not store.meta["complete"] and store.meta["kept_rows"]["stop"] == n_sequences(10)
    resumed = run(data, tmp_path / "grown", 20, tiny_model, **ONE_PER_PASS)
    assert resumed["plain"].status == "resumed" and resumed["plain"].sequences_computed == n_sequences(20) - n_sequences(10)
    run(data, tmp_path / "fresh", 20, tiny_model, **ONE_PER_PASS)
    assert_same_store(url(tmp_path / "grown"), url(tmp_path / "fresh"))
    # a kept row changed on disk: the block is computed whole, and the store is still the fresh one
    run(data, tmp_path / "damaged", 10, tiny_model, **ONE_PER_PASS)
    writable = grow(open_store(url(tmp_path / "damaged")), table.labels(), 20)
    writable.group["residual"][1, 0, 0] = 123.0
    redone = run(data, tmp_path / "damaged", 20, tiny_model, **ONE_PER_PASS)
    assert redone["plain"].sequences_computed == n_sequences(20)
    assert_same_store(url(tmp_path / "damaged"), url(tmp_path / "fresh"))


def test_a_smaller_limit_reads_a_prefix(data, tmp_path, tiny_model):
    run(data, tmp_path / "big", 20, tiny_model)
    run(data, tmp_path / "small", 12, tiny_model)
    prefix = MMS(layer=2).fit(_source(url(tmp_path / "big"), 12))
    own = MMS(layer=2).fit(url(tmp_path / "small"))
    np.testing.assert_array_equal(prefix.decision_function(url(tmp_path / "small")),
                                  own.decision_function(url(tmp_path / "small")))
    assert prefix.trained_on_["fingerprint"] == own.trained_on_["fingerprint"]
    with pytest.raises(Exception, match="holds the first 12 examples, not 20; grow it with: actstore extract"):
        _source(url(tmp_path / "small"), 20)


def _source(store_url, limit):
    from probes.sources import StoreSource

    return StoreSource(store_url, limit)


def test_stores_named_with_their_limit_are_read_adopted_and_migrated(data, tmp_path, tiny_model):
    out = tmp_path / "stores"
    run(data, out, 10, tiny_model)
    for view in VIEWS:  # as an earlier version named them
        shutil.move(url(out, view), url(out, view).replace("train.", "train.limit10."))
    fitted = CliRunner().invoke(probes, ["fit", "--method", "mms", "--layer", "1", "--train",
                                                            "tiny-random/count/train", "--store-root", str(out),
                                                            "--limit", "10", "--bootstrap", "10"])
    assert fitted.exit_code == 0, fitted.output
    grown = run(data, out, 20, tiny_model)  # adopted under the new name, then grown
    assert grown["plain"].status == "grown" and grown["plain"].sequences_computed == n_sequences(20) - n_sequences(10)
    assert not (out / "tiny-random" / "count" / "train.limit10.plain.zarr").exists()
    run(data, tmp_path / "old", 6, tiny_model, splits=("train", "test"))
    shutil.copytree(url(tmp_path / "old"), url(out).replace("train.", "train.limit6."))
    shutil.copytree(url(tmp_path / "old", split="test"), url(out, split="test").replace("test.", "test.limit6."))
    result = CliRunner().invoke(actstore, ["migrate", str(out)])
    assert result.exit_code == 0, result.output
    assert "test.limit6.plain.zarr -> " in result.output and "1 stores moved" in result.output
    assert "train.limit6.plain.zarr: stays (a store of the new name exists already)" in result.output
    assert open_store(url(out, split="test")).meta["limit"] == 6


def test_genies_run_at_a_larger_limit_computes_only_the_new_examples(tmp_path, monkeypatch):
    import json

    import actstore.engine.extraction
    from genies.plan import RunConfig
    from genies.runner import run_benchmark
    from test_genies_runner import SHIFTS, arithmetic

    for name, (offset, wrong_by) in {"easy": (1, 1), "hard": (40, 7), "trap": (3, 2), "ref": (5, 3)}.items():
        write_distribution(tmp_path / "data", name, arithmetic(12, offset, wrong_by), arithmetic(12, offset + 100, wrong_by))
    (tmp_path / "shifts.json").write_text(json.dumps(SHIFTS))
    computed = []
    extract_now = actstore.engine.extraction.extract

    def counted(*args, **kwargs):
        results = extract_now(*args, **kwargs)
        computed.extend((result.status, result.sequences_computed) for result in results)
        return results

    monkeypatch.setattr(actstore.engine.extraction, "extract", counted)

    def run_at(limit):
        computed.clear()
        config = RunConfig(model="tiny-random", shifts=str(tmp_path / "shifts.json"), methods=("zero-shot", "mms"),
                           layer=2, data_dir=str(tmp_path / "data"), store_root=str(tmp_path / "stores"),
                           out=tmp_path / f"run{limit}", limit=limit, ttc_methods=("zero-shot", "mms"))
        return run_benchmark(config, command="genies run (test)", log=lambda line: None)

    run_at(4)
    assert computed and {done for _, done in computed} == {4 * 3}  # 4 examples of 3 responses, every store
    stores = len(computed)
    run_at(10)
    assert computed == [("grown", 6 * 3)] * stores  # only the 6 new examples of each store
    run_at(7)
    assert computed == []  # every store holds them already: nothing extracted
