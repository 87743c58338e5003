"""Stores written from activations computed elsewhere (actstore.write_store): sealed like extracted ones,
refused in one line when the arrays are wrong, and, fed from an nnsight trace of the bundled model,
the same probe as our own extraction."""

import numpy as np
import pytest
import torch

from actstore import open_store, write_store
from actstore.engine.extraction import ExtractConfig, extract
from actstore.engine.views import VIEWS, encode
from actstore.store.info import store_info
from common import UserError
from conftest import write_distribution
from probes import MMS, LogReg
from synthetic import planted

LAYERS = (0, 10, 20, 30)


def _write(tmp_path, data, name="train.plain.zarr", **overrides):
    arguments = dict(example=data.example, response=data.response, score=data.score, model="mine",
                     dataset="planted", split="train", source="a test")
    return write_store(tmp_path / "mine" / "planted" / name, data.residual["plain"], **{**arguments, **overrides})


def test_a_written_store_is_whole_sealed_and_probes_read_it(tmp_path):
    data = planted(seed=0, strength=2.0)
    store = _write(tmp_path, data, loglik=data.loglik, module="model.layers", position="last")
    assert store.meta["complete"] and store.verify() == [] and store.meta["layers"] == [0, 1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "mine" / "planted").iterdir()) == ["train.plain.zarr"]  # no staging left
    np.testing.assert_array_equal(store.activations(2), data.residual["plain"][2])
    assert store_info(store.url).origin == "written from a test (module model.layers, position last)"
    on_written = MMS(layer=2).fit(store.url)
    on_arrays = MMS(layer=2).fit(data.source())
    np.testing.assert_allclose(on_written.decision_function(store.url), on_arrays.decision_function(data.source()))


def test_wrong_arrays_are_one_line_and_leave_nothing(tmp_path):
    data = planted(seed=0)
    cases = [({"residual": {0: np.ones((5, 3))}}, "example has shape (360,), expected (5,)"),
             ({"residual": {0: data.residual["plain"][0], 1: data.residual["plain"][1][:, :4]}}, "layer 1 has shape"),
             ({"score": np.zeros(len(data.score))}, "have no best response"),
             ({"response": np.zeros(len(data.score))}, "appears twice"),
             ({"split": "test"}, "split test (the name says train)"),
             ({"prompt_text": ["a"] * len(data.score)}, "give both prompt_text and response_text")]
    for overrides, message in cases:
        residual = overrides.pop("residual", data.residual["plain"])
        with pytest.raises(UserError, match=None) as raised:
            write_store(tmp_path / "mine" / "planted" / "train.plain.zarr", residual,
                        **{**dict(example=data.example, response=data.response, score=data.score, model="mine",
                                  dataset="planted", split="train"), **overrides})
        assert message in str(raised.value) and "\n" not in str(raised.value)
        assert not (tmp_path / "mine").exists() or not any((tmp_path / "mine" / "planted").iterdir())
    _write(tmp_path, data)
    with pytest.raises(UserError, match="exists already; pass overwrite=True"):
        _write(tmp_path, data)
    _write(tmp_path, planted(seed=1), overwrite=True)


EXAMPLES = [{"prompt": f"What is {a} plus {b}?\n### Response:\n",
             "responses": {f"{a + b}": 1.0, f"{a + b + 1 + a % 3}": 0.0}} for a, b in
            [(2, 3), (7, 5), (11, 4), (6, 6), (9, 13), (21, 8), (3, 30), (14, 14), (5, 17), (40, 2), (8, 9), (12, 1)]]


@pytest.mark.bundled
def test_a_store_written_from_an_nnsight_trace_fits_the_probe_our_extraction_fits(bundled_model, tmp_path):
    """The bundled model under nnsight, the residual stream at the last token of each sequence our extraction
    runs: written as a store, a probe fitted on it equals the one fitted on our own float32 extraction."""
    nnsight = pytest.importorskip("nnsight")
    data = write_distribution(tmp_path / "data", "sums", train=EXAMPLES)
    config = ExtractConfig(model="smollm2-135m", datasets=("sums",), splits=("train",), data_dir=str(data),
                           out=str(tmp_path / "ours"), layers=",".join(map(str, LAYERS)), dtype="float32",
                           progress=False)
    [ours] = extract(config, loaded=bundled_model)
    ours = open_store(ours.url)
    texts, sequences = ours.texts(), ours.sequences()
    tokenizer = bundled_model.tokenizer
    traced = nnsight.NNsight(bundled_model.model)
    rows = {layer: [] for layer in LAYERS}
    for prompt, response in zip(texts["prompt_text"], texts["response_text"]):
        prompt_ids, continuation_ids = encode(tokenizer, VIEWS["plain"], prompt, response)
        with torch.no_grad(), traced.trace(torch.tensor([prompt_ids + continuation_ids])):
            embeddings = traced.model.embed_tokens.output.save()
            block10 = traced.model.layers[9].output.save()
            block20 = traced.model.layers[19].output.save()
            block30 = traced.model.layers[29].output.save()
        for layer, output in zip(LAYERS, (embeddings, block10, block20, block30)):
            rows[layer].append(output[0, -1].float().numpy())
    written = write_store(tmp_path / "nnsight" / "smollm2-135m" / "sums" / "train.plain.zarr",
                          {layer: np.stack(values) for layer, values in rows.items()},
                          example=sequences["example"], response=sequences["response"], score=sequences["score"],
                          model="smollm2-135m", dataset="sums", split="train", prompt_text=texts["prompt_text"],
                          response_text=texts["response_text"], source="nnsight", module="model.layers")
    for layer in LAYERS:
        scale = float(np.sqrt(np.mean(ours.activations(layer) ** 2)))
        np.testing.assert_allclose(written.activations(layer), ours.activations(layer), atol=1e-4 * scale, rtol=0)
    for probe in (MMS(layer=20), LogReg(layer=10)):
        on_ours = type(probe)(**probe.get_params()).fit(ours.url)
        on_written = type(probe)(**probe.get_params()).fit(written.url)
        scores = on_ours.decision_function(ours.url)
        np.testing.assert_allclose(on_written.decision_function(written.url), scores,
                                   atol=1e-4 * float(np.abs(scores).max()), rtol=0)
