import json

import pytest

from distributions.split_file import check_example, fingerprint, validate_file
from distributions.data import list_distributions, load_split, resolve_data_dir
from common import UserError
from conftest import example, write_distribution


def test_load_split_keeps_order_and_best(tmp_path):
    root = write_distribution(tmp_path, "toy", [example(), example(responses={"a": 0.0, "b": 1.0})])
    split = load_split(root, "toy", "train")
    assert [e.index for e in split.examples] == [0, 1]
    assert split.examples[0].responses == ("Hi!", "No.", "Bye")
    assert [e.best for e in split.examples] == [0, 1]
    assert split.n_sequences == 5
    assert split.fingerprint == fingerprint(root / "distributions/toy/train.json")


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"responses": {"a": 1.0, "b": 0.0}}, "missing field 'prompt'"),
        ({"prompt": "  ", "responses": {"a": 1.0, "b": 0.0}}, "empty prompt"),
        ({"prompt": 3, "responses": {"a": 1.0, "b": 0.0}}, "'prompt' must be a string"),
        ({"prompt": "p"}, "missing field 'responses'"),
        ({"prompt": "p", "responses": {}}, "at least two responses, has 0"),
        ({"prompt": "p", "responses": {"a": 1.0}}, "at least two responses, has 1"),
        ({"prompt": "p", "responses": {"a": 1.0, "b": 1.0}}, "exactly one response must score 1.0, found 2"),
        ({"prompt": "p", "responses": {"a": 0.0, "b": 0.0}}, "found 0"),
        ({"prompt": "p", "responses": {"a": 0.5, "b": 1.0}}, "scores must be 1.0"),
        ({"prompt": "p", "responses": {"a": "1", "b": 0.0}}, "must be a number"),
        ({"prompt": "p", "responses": ["a", "b"]}, "must be an object"),
        ("just text", "expected an object"),
    ],
)
def test_check_example_names_the_problem(raw, message):
    assert message in check_example(raw)


def test_valid_example_passes():
    assert check_example(example()) is None


def test_strict_load_names_file_and_example(tmp_path):
    root = write_distribution(tmp_path, "toy", [example(), example(responses={"a": 1.0, "b": 1.0})])
    with pytest.raises(UserError, match=r"train.json: example 1: exactly one response"):
        load_split(root, "toy", "train")


def test_skip_bad_counts_skipped(tmp_path):
    root = write_distribution(tmp_path, "toy", [example(), {"prompt": ""}, example()])
    split = load_split(root, "toy", "train", skip_bad=True)
    assert [e.index for e in split.examples] == [0, 2]
    assert len(split.skipped) == 1 and split.skipped[0].index == 1


@pytest.mark.parametrize(
    "content, message",
    [(b"[{\"prompt\": ", "not valid JSON"), (b"\xff\xfe[]", "not UTF-8"), (b"{}", "expected a JSON list"), (b"[]", "no examples")],
)
def test_file_level_problems(tmp_path, content, message):
    path = tmp_path / "train.json"
    path.write_bytes(content)
    problems = validate_file(path)
    assert len(problems) == 1 and problems[0].index is None and message in problems[0].message


def test_unknown_dataset_suggests(tmp_path):
    root = write_distribution(tmp_path, "alpaca_mmlu", [example()])
    with pytest.raises(UserError, match="did you mean 'alpaca_mmlu'"):
        load_split(root, "alpaca_mmlx", "train")


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    """--data-dir (a search path), else $GENIES_DATA (a search path) then the per-user directory; new
    distributions go to the first directory named with --data-dir, else to the per-user one, never
    into $GENIES_DATA."""
    monkeypatch.setenv("GENIES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GENIES_DATA", f"{tmp_path / 'env'}:{tmp_path / 'env2'}")
    flag = resolve_data_dir(tmp_path / "flag")
    assert flag.dirs == (tmp_path / "flag",) and flag.write_to == tmp_path / "flag"
    both = resolve_data_dir(f"{tmp_path / 'mine'}:{tmp_path / 'shared'}")
    assert both.dirs == (tmp_path / "mine", tmp_path / "shared") and both.write_to == tmp_path / "mine"
    default = resolve_data_dir(None)
    assert default.dirs == (tmp_path / "env", tmp_path / "env2", tmp_path / "home" / "data")
    assert default.write_to == tmp_path / "home" / "data"
    monkeypatch.delenv("GENIES_DATA")
    assert resolve_data_dir(None).dirs == (tmp_path / "home" / "data",)


def test_a_search_path_mixes_directories_and_refuses_a_name_held_twice(tmp_path):
    shared = write_distribution(tmp_path / "shared", "alpaca_mmlu", [example()])
    mine = write_distribution(tmp_path / "mine", "my_data", [example(prompt="mine")])
    both = resolve_data_dir(f"{mine}:{shared}")
    assert list_distributions(both) == ["alpaca_mmlu", "my_data"]
    assert load_split(both, "my_data", "train").examples[0].prompt == "mine"
    assert load_split(both, "alpaca_mmlu", "train").path.parent.parent == shared / "distributions"
    with pytest.raises(UserError, match="unknown dataset 'my_dat' \\(did you mean 'my_data'"):
        load_split(resolve_data_dir(f"{tmp_path / 'shared'}:{tmp_path / 'none'}:{mine}"), "my_dat", "train")
    write_distribution(tmp_path / "mine", "alpaca_mmlu", [example(prompt="a copy")])
    with pytest.raises(UserError, match="'alpaca_mmlu' is in two data directories, .*mine.* and .*shared"):
        load_split(both, "alpaca_mmlu", "train")
    with pytest.raises(UserError, match="in two data directories"):
        list_distributions(both)


def test_fingerprint_changes_with_bytes(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps([example()]))
    first = fingerprint(path)
    path.write_text(json.dumps([example(prompt="other")]))
    assert fingerprint(path) != first and first.startswith("sha256:")
