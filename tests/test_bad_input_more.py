"""More bad input, driven through the CLI: names that are paths, text JSON cannot carry, store roots that
cannot be reached, damaged probe files and models that are not models. Each: exit 2, one `error:` line,
no traceback, and nothing written that looks complete."""

import json

import pytest
from click.testing import CliRunner

from cli import actstore, finetune, genies
from conftest import write_distribution
from test_bad_input import GOOD, extract_args, fails

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
    from actstore.locations import model_slug, store_url

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
