"""More bad input, driven through the CLI: names that are paths, text JSON cannot carry, store roots that
cannot be reached, damaged probe files and models that are not models. Each: exit 2, one `error:` line,
no traceback, and nothing written that looks complete."""

import importlib
import json
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

from common import UserError
from actstore.store.locations import model_slug, store_url
from cli import actstore, finetune, genies, probes
from conftest import reseal, write_distribution
from probes.labels import Labels
from probes.normalize import Normalizer
from probes.probe import FittedProbe
from probes.scorers import Feature, LinearScorer
from probes.sources import ArraySource
from test_bad_input import GOOD, completed_stores, extract_args, fails

NOT_A_NAME = "is not a dataset name"


@pytest.fixture
def outside(tmp_path):
    """A data dir, and a distribution `x` outside it that `../../outside/x` from its distributions/ reaches."""
    data = write_distribution(tmp_path / "data", "good", train=GOOD)
    write_distribution(tmp_path / "elsewhere", "x", train=GOOD)
    (tmp_path / "outside").symlink_to(tmp_path / "elsewhere" / "distributions")
    assert (data / "distributions" / "../../outside/x" / "train.json").is_file()  # the traversal would read it
    return data


def zarr_dirs(root):
    return sorted(p for p in root.rglob("*.zarr"))


@pytest.mark.parametrize("name", ["../../outside/x", "good/../../../outside/x", "..", "/abs/x", ".hidden"])
def test_a_dataset_is_a_name_not_a_path(tmp_path, outside, name):
    fails(actstore, extract_args(outside, tmp_path / "root" / "stores", name), repr(name), NOT_A_NAME)
    assert not zarr_dirs(tmp_path)  # nothing read from outside and nothing written anywhere


def test_finetune_eval_refuses_a_dataset_path(tmp_path, outside):
    fails(finetune, ["eval", "--method", "zero-shot", "--model", "tiny-random", "--dataset", "../../outside/x",
                     "--data-dir", outside], "'../../outside/x'", NOT_A_NAME)


@pytest.mark.parametrize("key", ["source", "target", "target_reference"])
def test_a_manifest_source_is_a_name_not_a_path(tmp_path, outside, key):
    shift = {"source": "good", "target": "good", "label": "extreme", key: "../../outside/x"}
    manifest = tmp_path / "shifts.json"
    manifest.write_text(json.dumps([{"source": "good", "target": "good"}, shift]))
    fails(genies, ["shifts", "ls", "--manifest", manifest], f"{manifest}: shift 1: {key} '../../outside/x'", NOT_A_NAME)
    fails(genies, ["run", "--model", "tiny-random", "--shifts", manifest, "--methods", "mms", "--data-dir", outside,
                   "--store-root", tmp_path / "stores", "--out", tmp_path / "run"], f"{manifest}: shift 1", NOT_A_NAME)
    assert not zarr_dirs(tmp_path) and not (tmp_path / "run").exists()


def test_a_model_slug_never_leaves_the_store_root(tmp_path):
    (tmp_path / "...gguf").write_bytes(b"")  # a GGUF file whose stem is ".."
    for model in ("../..", "/", "..gguf", "a/../../b", str(tmp_path / "...gguf")):
        slug = model_slug(model)
        assert slug not in ("", ".", "..") and "/" not in slug, (model, slug)
        assert store_url("/r", model, "d", "test", "plain").startswith(f"/r/{slug}/d/")


# ----------------------------------------------------------------------------- text JSON cannot carry

GOOD_TEXT = json.dumps(GOOD)[1:-1]  # four good examples, to put before a bad one
TEXT_CASES = {
    "lone surrogate in a prompt": ('{"prompt": "Hi \\ud800 there", "responses": {"a": 1.0, "b": 0.0}}',
                                   "prompt holds a lone surrogate '\\ud800' at character 3"),
    "lone surrogate in a response": ('{"prompt": "Hi", "responses": {"a": 1.0, "b\\udfff": 0.0}}',
                                     "response 'b\\udfff' holds a lone surrogate '\\udfff' at character 1"),
    "duplicate response": ('{"prompt": "Hi", "responses": {"a": 1.0, "b": 0.0, "a": 0.0}}',
                           "response 'a' appears more than once in 'responses'"),
    "duplicate field": ('{"prompt": "Hi", "responses": {"a": 1.0, "b": 0.0}, "prompt": "Bye"}',
                        "field 'prompt' appears more than once"),
}


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_text_json_cannot_carry_is_reported_by_validate_and_refused_by_extract(tmp_path, case):
    bad_example, message = TEXT_CASES[case]
    data = write_distribution(tmp_path / "data", "bad", train=GOOD)
    path = data / "distributions" / "bad" / "test.json"
    path.write_text(f"[{GOOD_TEXT}, {bad_example}]")
    validated = CliRunner().invoke(genies, ["data", "validate", "--data-dir", str(data)])
    assert validated.exit_code == 2 and "Traceback" not in validated.output
    assert [line for line in validated.output.splitlines() if line.startswith(f"{path}: example 4: {message}")]
    fails(actstore, extract_args(data, tmp_path / "s"), f"{path}: example 4: {message}", "--skip-bad")
    assert not zarr_dirs(tmp_path)
    skipped = CliRunner().invoke(actstore, [str(a) for a in extract_args(data, tmp_path / "s", "bad", "--skip-bad")])
    assert skipped.exit_code == 0, skipped.output  # left out and counted, like any other bad example
    assert "(created: 8 sequences" in skipped.output


# ----------------------------------------------------------------------------- store roots and store URLs

UNREACHABLE = {
    "foo://x": ": unknown storage scheme 'foo://'",
    "ftp://localhost:1/x": ": cannot reach this storage (ConnectionRefusedError",
    "http://localhost:1/x": ": cannot ",  # reach this storage (reading) / write stores there (extract)
}


def store_commands(tmp_path, root):
    """Every command that takes a store root or a store URL, pointed at ``root``."""
    data = write_distribution(tmp_path / "data", "good", train=GOOD)
    manifest = tmp_path / "shifts.json"
    manifest.write_text(json.dumps([{"source": "good", "target": "good"}]))
    store = f"{root}/tiny-random/good/test.plain.zarr"
    return {
        "extract --out": (actstore, extract_args(data, root, "good")),
        "genies run --store-root": (genies, ["run", "--model", "tiny-random", "--shifts", manifest, "--methods", "mms",
                                             "--data-dir", data, "--store-root", root, "--out", tmp_path / "run"]),
        "actstore ls": (actstore, ["ls", root]),
        "actstore info": (actstore, ["info", store]),
        "probes fit --train": (probes, ["fit", "--method", "mms", "--layer", "2", "--train", store]),
    }


@pytest.mark.parametrize("root", list(UNREACHABLE))
def test_a_store_root_that_cannot_be_used_is_one_line_everywhere(tmp_path, root):
    for name, (command, args) in store_commands(tmp_path, root).items():
        fails(command, args, f"error: {root}", UNREACHABLE[root])
    assert not (tmp_path / "run").exists()


def test_an_empty_store_root_is_an_error_not_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("GENIES_HOME", str(tmp_path / "home"))
    commands = store_commands(tmp_path, "")
    fails(*commands["extract --out"], "--out is empty", "omit --out for the default")
    fails(*commands["genies run --store-root"], "--store-root is empty")
    fails(*commands["actstore ls"], "ROOT is empty")
    assert not (tmp_path / "home").exists() and not (tmp_path / "run").exists()


def test_a_local_root_that_cannot_be_created(tmp_path):
    (tmp_path / "a-file").write_text("mine")
    for root in (tmp_path / "a-file" / "stores", f"file://{tmp_path}/a-file/stores"):
        fails(*store_commands(tmp_path, root)["extract --out"],
              f"{tmp_path}/a-file/stores: cannot create the store root: {tmp_path / 'a-file'} is a file, not a directory")
        fails(*store_commands(tmp_path, root)["genies run --store-root"], "cannot create the store root")
    assert (tmp_path / "a-file").read_text() == "mine"


def test_a_file_url_is_the_local_path_it_names(tmp_path):
    """fsspec's file:// does not create directories, so a file:// root is used as its local path."""
    command, args = store_commands(tmp_path, f"file://{tmp_path}/new/stores")["extract --out"]
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{tmp_path}/new/stores/tiny-random/good/test.plain.zarr  (created")
    assert not list((tmp_path / "new").glob(".genies-write-check-*"))  # the write check leaves nothing behind


def test_a_missing_fsspec_backend_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if s3fs were not installed (and never imported)
    monkeypatch.delitem(importlib.import_module("fsspec.registry")._registry, "s3", raising=False)
    for name, (command, args) in store_commands(tmp_path, "s3://bucket/stores").items():
        fails(command, args, "'s3://' needs the fsspec backend s3fs, which is not installed: run `pip install s3fs`")


@pytest.fixture(scope="module")
def s3():
    """A local S3 (moto's server) with one bucket, `present`; the environment points boto at it."""
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            patch.setenv(key, value)
        import boto3

        boto3.client("s3").create_bucket(Bucket="present")
        yield
    server.stop()


def test_a_missing_bucket_is_one_line_and_a_present_one_works(tmp_path, s3):
    fails(*store_commands(tmp_path, "s3://missing/stores")["extract --out"],
          "s3://missing/stores: cannot write stores there", "bucket does not exist")
    fails(*store_commands(tmp_path, "s3://missing/stores")["actstore ls"], "s3://missing/stores: no such directory")
    fails(*store_commands(tmp_path, "s3://missing/stores")["probes fit --train"], "no activation store here")
    command, args = store_commands(tmp_path, "s3://present/stores")["extract --out"]
    result = CliRunner().invoke(command, [str(a) for a in args] + ["--layers", "0,2"])
    assert result.exit_code == 0, result.output
    command, args = store_commands(tmp_path, "s3://present/stores")["probes fit --train"]
    fitted = CliRunner().invoke(command, [str(a) for a in args] + ["--bootstrap", "0"])
    assert fitted.exit_code == 0 and "train (in-sample)  1.0000" in fitted.output, fitted.output


# ----------------------------------------------------------------------------- damaged probe files


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """train/test stores (plain, yes, no; layers 0 and 2; hidden size 64) and saved mms and ccs probes."""
    root = tmp_path_factory.mktemp("fitted")
    data = write_distribution(root / "data", "good", train=GOOD, test=GOOD)
    extracted = CliRunner().invoke(actstore, ["extract", "--model", "tiny-random", "--dataset", "good", "--data-dir",
                                              str(data), "--out", str(root / "s"), "--views", "plain,yes,no",
                                              "--layers", "0,2", "--no-progress"])
    assert extracted.exit_code == 0, extracted.output
    train = f"{root}/s/tiny-random/good/train.plain.zarr"
    for method in ("mms", "ccs"):
        result = CliRunner().invoke(probes, ["fit", "--method", method, "--layer", "2", "--train", train, "--out",
                                             str(root / method), "--bootstrap", "0"])
        assert result.exit_code == 0, result.output
    return {"root": root, "test": f"{root}/s/tiny-random/good/test.plain.zarr"}


def damaged_probe(fitted, tmp_path, method, document=None, tensors=None, raw_document=None):
    """A copy of the saved ``method`` probe; ``document(dict)`` and ``tensors(dict)`` edit its files in place
    (``raw_document`` replaces probe.json's text). Sealed again where saves are sealed: a probe saved whole
    whose contents are wrong (a writer's bug, an old version, a diverged fit), not a damaged copy."""
    probe = tmp_path / method
    shutil.copytree(fitted["root"] / method, probe)
    path = probe / "probe.json"
    if document:
        content = json.loads(path.read_text())
        document(content)
        path.write_text(json.dumps(content))
    if raw_document is not None:
        path.write_text(raw_document)
    if tensors:
        arrays = load_file(str(probe / "tensors.safetensors"))
        tensors(arrays)
        save_file(arrays, str(probe / "tensors.safetensors"))
    reseal(probe)
    return probe


def eval_fails(fitted, probe, *fragments):
    return fails(probes, ["eval", probe, "--eval", fitted["test"], "--bootstrap", "0"], *fragments)


def test_the_saved_probes_score(fitted):
    for method in ("mms", "ccs"):
        result = CliRunner().invoke(probes, ["eval", str(fitted["root"] / method), "--eval", fitted["test"], "--bootstrap", "0"])
        assert result.exit_code == 0 and "good/test" in result.output, result.output


def narrow(arrays, names=None, width=32):
    for name in names or list(arrays):
        arrays[name] = np.ascontiguousarray(arrays[name][..., :width])


PROBE_DAMAGE = {
    "a tensor of another shape": ("mms", None, lambda t: narrow(t, ["direction"]),
                                  "tensors.safetensors: damaged probe file: tensor 'direction' has shape (32,), but 'mean' has (64,)"),
    "ccs weight of another shape": ("ccs", None, lambda t: narrow(t, ["weight"]),
                                    "tensors.safetensors: damaged probe file: tensor 'yes_mean' has shape (64,), but 'weight' has (32,)"),
    "tensors narrower than the model": ("mms", None, narrow,
                                        "tensors.safetensors: damaged probe file: its tensors read the residual activations "
                                        "of shape (32,), but the model's are (64,)"),
    "a missing tensor": ("mms", None, lambda t: t.pop("scale"),
                         "tensors.safetensors: damaged probe file: no tensor 'scale' (a linear probe has direction, mean, scale"),
    "NaN weights": ("mms", None, lambda t: t["direction"].__setitem__(3, np.nan),
                    "tensors.safetensors: the probe has NaN or infinite weights: 1 NaN of the 64 values of 'direction'"),
    "infinite weights": ("ccs", None, lambda t: t["weight"].__setitem__(slice(0, 2), np.inf),
                         "the probe has NaN or infinite weights: 2 infinite of the 64 values of 'weight'"),
    "a NaN bias": ("ccs", lambda d: d["scorer_config"].__setitem__("bias", float("nan")), None,
                   "the probe has NaN or infinite weights: 1 NaN of the 1 values of 'bias'"),
    "a non-numeric temperature": ("mms", lambda d: d.__setitem__("temperature", "warm"), None,
                                  "probe.json: damaged probe file: 'temperature' is 'warm', not a number"),
    "a NaN temperature": ("mms", lambda d: d.__setitem__("temperature", float("nan")), None,
                          "probe.json: damaged probe file: temperature nan is not a positive finite number"),
    "an infinite temperature": ("mms", lambda d: d.__setitem__("temperature", float("inf")), None,
                                "temperature inf is not a positive finite number"),
    "a zero temperature": ("mms", lambda d: d.__setitem__("temperature", 0), None,
                           "temperature 0.0 is not a positive finite number"),
    "no temperature": ("mms", lambda d: d.pop("temperature"), None, "probe.json: damaged probe file: no 'temperature'"),
    "no method": ("mms", lambda d: d.pop("method"), None, "probe.json: damaged probe file: no 'method'"),
    "no scorer_config": ("mms", lambda d: d.pop("scorer_config"), None, "probe.json: damaged probe file: no 'scorer_config'"),
    "no layer": ("mms", lambda d: d["scorer_config"].pop("layer"), None,
                 "probe.json: damaged probe file: scorer_config has no 'layer'"),
    "an unreadable feature": ("mms", lambda d: d["scorer_config"]["feature"].__setitem__("colour", "red"), None,
                              "probe.json: damaged probe file: unreadable scorer_config"),
    "an empty object": ("mms", lambda d: d.clear(), None, "probe.json: damaged probe file: no 'method'"),
}


@pytest.mark.parametrize("case", list(PROBE_DAMAGE))
def test_a_damaged_probe_file_is_one_line(fitted, tmp_path, case):
    method, document, tensors, message = PROBE_DAMAGE[case]
    probe = damaged_probe(fitted, tmp_path, method, document, tensors)
    eval_fails(fitted, probe, str(probe), message, "refit the probe")


def test_a_probe_file_that_is_not_an_object(fitted, tmp_path):
    probe = damaged_probe(fitted, tmp_path, "mms", raw_document="[1, 2]")
    eval_fails(fitted, probe, f"{probe / 'probe.json'}: not a probe file (expected a JSON object, got list)")


def test_a_probe_narrower_than_the_store_is_refused_even_without_its_record(fitted, tmp_path):
    """No hidden size in trained_on to compare with: the store's width is."""
    probe = damaged_probe(fitted, tmp_path, "mms", lambda d: d.__setitem__("trained_on", {}), narrow)
    eval_fails(fitted, probe, "error: good/test: the mms probe does not fit this store: its tensors read the residual "
               "activations of shape (32,), but the model's are (64,)")


def test_nan_weights_are_named_not_blamed_on_the_store():
    """A probe that came out of a fit with NaN weights: its scores are refused, naming the weights."""
    labels = Labels.from_sequences({"example": np.array([0, 0, 1, 1]), "response": np.array([0, 1, 0, 1]),
                                    "score": np.array([1.0, 0.0, 0.0, 1.0])})
    source = ArraySource(labels, {"plain": {2: np.ones((4, 8), dtype=np.float32)}}, meta={"hidden_size": 8})
    direction = np.ones(8, dtype=np.float32)
    direction[5] = np.nan
    probe = FittedProbe("mms", LinearScorer(Feature(), 2, Normalizer(np.zeros(8, np.float32), np.ones(8, np.float32)), direction))
    with pytest.raises(UserError, match=r"4 of 4 mms scores are not finite because the probe has NaN or infinite "
                                        r"weights: 1 NaN of the 8 values of 'direction'"):
        probe.score(source)


# ----------------------------------------------------------------------------- --model that is not a model

NOT_A_MODEL = "not a model: a local model is a directory holding config.json (Hugging Face format) or a .gguf file"


def test_a_model_path_that_is_not_a_model_is_one_line(tmp_path):
    data = write_distribution(tmp_path / "data", "good", train=GOOD)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("[1, 2]")
    data_file = data / "distributions" / "good" / "train.json"
    cases = {data_file: NOT_A_MODEL, tmp_path / "empty": NOT_A_MODEL,
             tmp_path / "broken": "cannot load a model from it (", tmp_path / "fake.gguf": "cannot load a model from it ("}
    (tmp_path / "fake.gguf").write_text("not a GGUF file")
    for model, message in cases.items():
        args = extract_args(data, tmp_path / "s", "good")
        args[args.index("--model") + 1] = model
        fails(actstore, args, f"error: {model}: {message}")
        fails(finetune, ["eval", "--method", "zero-shot", "--model", model, "--dataset", "good", "--data-dir", data],
              f"error: {model}: {message}")
    assert not completed_stores(tmp_path)
