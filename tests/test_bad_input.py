"""Bad input everywhere a user gives us something: one line `error: ...` naming the file or object
(and the example), exit code 2, no traceback, and no store left marked complete."""

import json
import shutil
from pathlib import Path

import pytest
import zarr
from click.testing import CliRunner

from cli import actstore, probes
from conftest import edit_store_attrs, example, write_distribution

GOOD = [example(f"Question {i}?\n### Response:\n", {f"right {i}": 1.0, f"wrong {i}": 0.0}) for i in range(4)]



def fails(command, args, *fragments):
    """Run the command; assert exit 2 and one `error:` line holding every fragment. Returns the line."""
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    # the only other line a command may print before failing: the compute dtype, once work starts
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("computing in ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def completed_stores(root: Path) -> list[Path]:
    return [p.parent for p in root.rglob("zarr.json")
            if p.parent.name.endswith(".zarr") and json.loads(p.read_text()).get("attributes", {}).get("complete")]


def extract_args(data_dir, out, dataset="bad", *extra):
    return ["extract", "--model", "tiny-random", "--dataset", dataset, "--split", "test", "--data-dir", data_dir,
            "--out", out, "--block-size", "2", "--no-progress", *extra]


def bad_file(tmp_path, content) -> tuple[Path, Path]:
    """A data dir whose distribution `bad` has ``content`` (bytes, or JSON-able) as its test split."""
    data = write_distribution(tmp_path / "data", "bad", train=GOOD)
    path = data / "distributions" / "bad" / "test.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return data, path


LONG_PROMPT = "Tell me everything. " * 60  # 1,200 bytes: more than tiny-random's context of 1,024 tokens

DATA_CASES = {
    "malformed JSON": (b'[{"prompt": "Hi", "responses": {"a": 1.0, "b": 0.0}},, ]', None, "not valid JSON (line 1"),
    "truncated JSON": (json.dumps(GOOD).encode()[:-30], None, "not valid JSON"),
    "not a list": ({"prompt": "Hi"}, None, "expected a JSON list of examples, got dict"),
    "empty list": ([], None, "holds no examples"),
    "example not an object": ([*GOOD[:1], "just text"], 1, "expected an object, got str"),
    "prompt not a string": ([{"prompt": 7, "responses": {"a": 1.0, "b": 0.0}}], 0, "'prompt' must be a string, got int"),
    "responses a list": ([*GOOD[:2], {"prompt": "Hi", "responses": ["a", "b"]}], 2, "'responses' must be an object"),
    "score a string": ([{"prompt": "Hi", "responses": {"a": "1.0", "b": 0.0}}], 0, "must be a number, got str"),
    "score out of range": ([{"prompt": "Hi", "responses": {"a": 0.7, "b": 0.0}}], 0, "scores must be 1.0 (preferred) or 0.0"),
    "missing prompt": ([*GOOD[:1], {"responses": {"a": 1.0, "b": 0.0}}], 1, "missing field 'prompt'"),
    "missing responses": ([{"prompt": "Hi"}], 0, "missing field 'responses'"),
    "no response": ([{"prompt": "Hi", "responses": {}}], 0, "needs at least two responses, has 0"),
    "one response": ([*GOOD, {"prompt": "Hi", "responses": {"a": 1.0}}], 4, "needs at least two responses, has 1"),
    "two preferred": ([{"prompt": "Hi", "responses": {"a": 1.0, "b": 1.0, "c": 0.0}}], 0, "exactly one response must score 1.0, found 2"),
    "no preferred": ([{"prompt": "Hi", "responses": {"a": 0.0, "b": 0.0}}], 0, "exactly one response must score 1.0, found 0"),
    "empty prompt": ([*GOOD[:3], {"prompt": "  ", "responses": {"a": 1.0, "b": 0.0}}], 3, "empty prompt"),
    "non-UTF-8 bytes": (json.dumps(GOOD).encode().replace(b"right 2", b"right \xff\xfe2"), None, "not UTF-8 text (byte"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file(tmp_path, case):
    content, index, message = DATA_CASES[case]
    data, path = bad_file(tmp_path, content)
    where = f"{path}: example {index}: " if index is not None else f"{path}: "
    fails(actstore, extract_args(data, tmp_path / "s"), where, message)
    assert not (tmp_path / "s").exists()  # refused before any store was created


def test_prompt_longer_than_the_context_is_refused_even_with_skip_bad(tmp_path):
    """Refused, never skipped (dropping a response would change the pairs), and before the store is created."""
    content = [*GOOD, *GOOD, example(LONG_PROMPT)]  # example 8: block 4 of 5
    data, path = bad_file(tmp_path, content)
    for flag in ("--strict", "--skip-bad"):
        fails(actstore, extract_args(data, tmp_path / "s", "bad", flag), f"{path}: example 8, response 0: ",
              "more than the model's context of 1024")
    assert not list((tmp_path / "s").rglob("*.zarr"))  # refused before the store was created


def test_skip_bad_counts_the_skipped_examples_in_the_store(tmp_path):
    content = [GOOD[0], {"prompt": "", "responses": {"a": 1.0, "b": 0.0}}, GOOD[1], {"prompt": "Hi", "responses": {"a": 1.0}}]
    data, path = bad_file(tmp_path, content)
    fails(actstore, extract_args(data, tmp_path / "s"), f"{path}: example 1: empty prompt", "--skip-bad")
    fails(actstore, extract_args(data, tmp_path / "s", "bad", "--strict"), f"{path}: example 1: empty prompt")
    result = CliRunner().invoke(actstore, [str(a) for a in extract_args(data, tmp_path / "s", "bad", "--skip-bad")])
    assert result.exit_code == 0, result.output
    [store] = completed_stores(tmp_path / "s")
    attrs = zarr.open_group(str(store), mode="r").attrs
    assert attrs["n_skipped_examples"] == 2 and attrs["n_examples"] == 2
    assert [s.split(": ", 1)[1] for s in attrs["skipped_examples"]] == [
        "example 1: empty prompt", "example 3: needs at least two responses, has 1"]


@pytest.mark.parametrize("change, message", [
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--model", "no-such-org/no-such-model"], "cannot resolve model 'no-such-org/no-such-model'"),
    (["--views", "plain,maybe"], "unknown view 'maybe'"),
    (["--layers", "9"], "layer 9 is out of range for tiny-random: layers are 0..4"),
    (["--layers", "-1"], "tiny-random"),
    (["--layers", "two"], "'two'"),
    (["--split", "dev"], "unknown split 'dev'"),
    (["--block-size", "0"], "--block-size must be at least 1"),
])
def test_bad_names_on_the_extract_command_line(tmp_path, change, message):
    data = write_distribution(tmp_path / "data", "good", train=GOOD)
    args = extract_args(data, tmp_path / "s", "good")
    if change[0] in args:
        args[args.index(change[0]) + 1] = change[1]
    else:
        args += change
    fails(actstore, args, message)
    assert not completed_stores(tmp_path) if (tmp_path / "s").exists() else True


# ----------------------------------------------------------------------------- stores and probes


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Complete train/test stores of `good` (plain, yes, no views) and a saved probe."""
    root = tmp_path_factory.mktemp("stores")
    data = write_distribution(root / "data", "good", train=GOOD, test=GOOD)
    args = ["extract", "--model", "tiny-random", "--dataset", "good", "--data-dir", str(data), "--out", str(root / "s"),
            "--views", "plain,yes,no", "--layers", "0,2", "--no-progress"]
    result = CliRunner().invoke(actstore, args)
    assert result.exit_code == 0, result.output
    train = f"{root}/s/tiny-random/good/train.plain.zarr"
    fitted = CliRunner().invoke(probes, ["fit", "--method", "mms", "--layer", "2", "--train", train, "--out",
                                         str(root / "probe"), "--bootstrap", "0"])
    assert fitted.exit_code == 0, fitted.output
    return {"root": root, "data": data, "args": args, "train": train, "probe": root / "probe",
            "test": f"{root}/s/tiny-random/good/test.plain.zarr"}


def copy_store(url, to) -> str:
    shutil.copytree(url, to)
    return str(to)


def test_unknown_method_and_layers_in_probes(stores):
    fails(probes, ["fit", "--method", "nope", "--layer", "2", "--train", stores["train"]], "nope")
    fails(probes, ["fit", "--method", "mms", "--layer", "1", "--train", stores["train"]], "layer 1", "0,2")
    fails(probes, ["fit", "--method", "mms", "--layer", "40", "--train", stores["train"]], "layer 40")
    fails(probes, ["fit", "--method", "mms", "--layer", "2", "--train", str(stores["root"] / "none.plain.zarr")],
          "none.plain.zarr: no activation store here")


def test_probe_from_another_model_is_refused(stores, tmp_path):
    other = copy_store(stores["test"].replace("test.plain", "test.plain"), tmp_path / "test.plain.zarr")
    edit_store_attrs(other, model="other-model", model_id="other-model@abc")
    fails(probes, ["eval", stores["probe"], "--eval", other, "--bootstrap", "0"], "other-model", "mms probe was fit on")


def test_not_a_probe_is_refused(stores, tmp_path):
    fails(probes, ["eval", tmp_path, "--eval", stores["test"]], f"{tmp_path}: not a saved probe")
    (tmp_path / "probe.json").write_text("{ not json")
    (tmp_path / "tensors.safetensors").write_bytes(b"")
    fails(probes, ["eval", tmp_path, "--eval", stores["test"]], f"{tmp_path}: incomplete (no complete.json")


def test_incomplete_store_is_refused_by_probes(stores, tmp_path):
    url = copy_store(stores["train"], tmp_path / "train.plain.zarr")
    group = zarr.open_group(url, mode="r+")
    group["block_done"][0] = 0
    group.attrs["complete"] = False
    fails(probes, ["fit", "--method", "mms", "--layer", "2", "--train", url], url, "incomplete store (0/1 blocks written)",
          "re-run the same `actstore extract` command")


def test_views_from_another_dataset_version_are_refused(stores, tmp_path):
    """The yes and no views of one split must come from the same data file (same fingerprint)."""
    for view in ("yes", "no"):
        copy_store(stores["train"].replace(".plain.", f".{view}."), tmp_path / f"train.{view}.zarr")
    # extracted elsewhere from another version of the file (not on this machine, so only the views disagree)
    edit_store_attrs(tmp_path / "train.no.zarr", fingerprint="sha256:" + "0" * 64,
                     data_file=str(tmp_path / "elsewhere" / "train.json"))
    fails(probes, ["fit", "--method", "ccs", "--layer", "2", "--train", tmp_path / "train.yes.zarr", "--bootstrap", "0"],
          "train.no.zarr does not match", "another version of the data file")


def test_re_extract_after_the_data_file_changed_says_so(stores):
    path = stores["data"] / "distributions" / "good" / "train.json"
    original = path.read_bytes()
    try:
        path.write_text(json.dumps([*GOOD[:3], example("A new question?\n### Response:\n")]))
        line = fails(actstore, stores["args"], "train.plain.zarr: holds a different extraction (fingerprint: stored sha256:",
                     f"the data file {path} changed since this store was extracted", "--overwrite")
        assert "complete" not in line
    finally:
        path.write_bytes(original)
    assert len(completed_stores(stores["root"] / "s")) == 6  # nothing was touched


def test_extract_into_something_that_is_not_a_store(tmp_path):
    data = write_distribution(tmp_path / "data", "good", train=GOOD)
    target = tmp_path / "s" / "tiny-random" / "good" / "test.plain.zarr"
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    fails(actstore, extract_args(data, tmp_path / "s", "good"), f"{target}: exists but is not an activation store")
    assert (target / "notes.txt").read_text() == "mine"


def test_info_of_an_incomplete_store_says_so(stores, tmp_path):
    url = copy_store(stores["test"], tmp_path / "test.plain.zarr")
    group = zarr.open_group(url, mode="r+")
    group["block_done"][0] = 0
    group.attrs["complete"] = False
    result = CliRunner().invoke(actstore, ["info", url])
    assert result.exit_code == 0 and "False" in result.output.splitlines()[-1]
    fails(probes, ["eval", stores["probe"], "--eval", url, "--bootstrap", "0"], url, "incomplete store")
