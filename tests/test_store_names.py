"""A store found by name holds what the name says: model, dataset, split, view, enough examples. A store put at
another store's name (by hand, by a copy, by a script) is refused in one line naming both, wherever
a name is looked up: probes fit/eval/sweep, actstore info, a train store's own test split."""

import shlex
import shutil

import pytest
from click.testing import CliRunner

from actstore.store.locations import StoreName, name_of_place, parse_store_name
from cli import actstore, probes
from conftest import example, write_distribution
from test_bad_input import fails

EASY = [example(f"Add {i} and 1.\n### Response:\n", {f"{i + 1}": 1.0, f"{i + 2}": 0.0}) for i in range(6)]
HARD = [example(f"Multiply {i} by 7.\n### Response:\n", {f"{7 * i}": 1.0, f"{7 * i + 1}": 0.0}) for i in range(6)]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """A root with tiny-random's easy and hard (train, test), and easy/train's first 4 examples elsewhere."""
    base = tmp_path_factory.mktemp("names")
    data = write_distribution(base / "data", "easy", train=EASY)
    write_distribution(data, "hard", train=HARD)
    root = base / "stores"
    for out, extra in ((root, []), (base / "first4", ["--limit", "4"])):
        result = CliRunner().invoke(actstore, ["extract", "--model", "tiny-random", "--dataset", "easy,hard",
                                               "--split", "train,test", "--data-dir", str(data), "--out", str(out),
                                               "--block-size", "2", "--no-progress", *extra])
        assert result.exit_code == 0, result.output
    shutil.copytree(base / "first4" / "tiny-random" / "easy" / "train.plain.zarr",
                    root / "tiny-random" / "easy" / "first4.train.plain.zarr")
    return root


@pytest.fixture
def root(extracted, tmp_path):
    """A copy of the extracted root that a test may rearrange."""
    shutil.copytree(extracted, tmp_path / "stores")
    return tmp_path / "stores"


def move(root, source, target):
    """Put the store at ``source`` (relative to root) at ``target``, replacing what is there."""
    shutil.rmtree(root / target, ignore_errors=True)
    (root / target).parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / source, root / target)


def fit(root, train, *extra):
    return ["fit", "--method", "mms", "--layer", "1", "--train", train, "--store-root", root, "--bootstrap", "10",
            *extra]


def test_honest_names_are_fitted_and_described(root):
    result = CliRunner().invoke(probes, [str(a) for a in fit(root, "tiny-random/easy/train")])
    assert result.exit_code == 0, result.output
    assert "source test" in result.output
    limited = CliRunner().invoke(probes, [str(a) for a in fit(root, "tiny-random/easy/train", "--limit", "4")])
    assert limited.exit_code == 0, limited.output
    info = CliRunner().invoke(actstore, ["info", "tiny-random/easy/test", "--store-root", str(root), "--verify"])
    assert info.exit_code == 0, info.output


def test_a_store_of_another_model_at_a_models_name_is_refused(root):
    move(root, "tiny-random", "smollm2-135m")
    fails(probes, fit(root, "smollm2-135m/easy/train"), "smollm2-135m/easy/train: the store at",
          "model tiny-random (the name says smollm2-135m)")
    fails(actstore, ["info", "smollm2-135m/easy/train", "--store-root", root], "model tiny-random")


def test_another_datasets_store_at_a_datasets_name_is_refused(root):
    move(root, "tiny-random/hard/train.plain.zarr", "tiny-random/easy/train.plain.zarr")
    fails(probes, fit(root, "tiny-random/easy/train"), "dataset hard (the name says easy)")
    # found as an --eval store, or by its path under the root (actstore info, --verify or not)
    fails(probes, fit(root, "tiny-random/hard/train", "--eval", "tiny-random/easy/train"), "dataset hard")
    path = root / "tiny-random/easy/train.plain.zarr"
    fails(actstore, ["info", path, "--store-root", root, "--verify"], "dataset hard (the name says easy)")


def test_a_test_split_at_the_train_name_is_refused_even_outside_a_root(root, tmp_path):
    move(root, "tiny-random/easy/test.plain.zarr", "tiny-random/easy/train.plain.zarr")
    fails(probes, fit(root, "tiny-random/easy/train"), "split test (the name says train)")
    elsewhere = tmp_path / "mine" / "train.plain.zarr"  # a path anywhere: its file name still says train
    shutil.copytree(root / "tiny-random/easy/train.plain.zarr", elsewhere)
    fails(probes, fit(root, elsewhere), "split test (the name says train)")
    fails(actstore, ["info", elsewhere], "split test")


def test_a_store_of_fewer_examples_than_asked_for_is_refused(root):
    first4 = "tiny-random/easy/first4.train.plain.zarr"
    move(root, first4, "tiny-random/easy/train.limit6.plain.zarr")  # an earlier version's name, the wrong limit
    shutil.rmtree(root / "tiny-random/easy/train.plain.zarr")
    fails(probes, fit(root, "tiny-random/easy/train", "--limit", "6"), "only the first 4 examples (asked for 6)")
    move(root, first4, "tiny-random/easy/train.plain.zarr")
    line = fails(probes, fit(root, "tiny-random/easy/train", "--limit", "6"), "holds the first 4 examples, not 6; grow "
                 "it with: actstore extract --model tiny-random --dataset easy --split train --views plain --limit 6")
    grown = CliRunner().invoke(actstore, shlex.split(line.split("grow it with: ")[1])[1:] + ["--no-progress"])
    assert grown.exit_code == 0 and "(grown: 12 sequences, 4 computed" in grown.output, grown.output
    assert CliRunner().invoke(probes, [str(a) for a in fit(root, "tiny-random/easy/train", "--limit", "6")]).exit_code == 0


def test_a_plain_store_at_a_views_name_is_refused(root):
    move(root, "tiny-random/easy/train.plain.zarr", "tiny-random/easy/train.yes.zarr")
    fails(actstore, ["info", "tiny-random/easy/train/yes", "--store-root", root], "view plain (the name says yes)")


def test_a_test_split_found_beside_the_train_store_is_the_same_extraction(root):
    move(root, "tiny-random/hard/test.plain.zarr", "tiny-random/easy/test.plain.zarr")
    fails(probes, fit(root, "tiny-random/easy/train"), "is not the test split of", "dataset 'hard' vs 'easy'")


def test_names_and_places_parse_to_what_they_say():
    assert parse_store_name("org/Model-7B/arith/test/no", limit=3) == \
        StoreName("org--Model-7B", "arith", "test", "no", 3)
    assert parse_store_name("runs/a/test.plain.zarr") is None
    assert name_of_place("/r/m/d/train.limit5.heads.chat.yes.zarr", "/r") == \
        StoreName("m", "d", "train", "yes", 5, "heads", "chat")  # an earlier version's name: the limit was in it
    assert name_of_place("/elsewhere/d/test.no.zarr", "/r") == StoreName(None, None, "test", "no")
    assert name_of_place("/r/m/d/mine.zarr", "/r") is None
    for place in ("/r/m/d/train.heads.chat.yes.zarr", "/r/org--M/d/test.plain.zarr"):
        name = name_of_place(place, "/r")
        assert name.url("/r") == place  # a place and the name it gives are one
    legacy = name_of_place("/r/m/d/train.limit5.heads.chat.yes.zarr", "/r")
    assert legacy.legacy_url("/r") == "/r/m/d/train.limit5.heads.chat.yes.zarr"
    assert legacy.url("/r") == "/r/m/d/train.heads.chat.yes.zarr"
    recorded = {"model": "tiny-random", "dataset": "d", "split": "train", "view": "yes", "limit": 5,
                "site": "heads", "prompt_format": "chat"}
    assert StoreName("tiny-random", "d", "train", "yes", 5, "heads", "chat").mismatches(recorded) == []
    # a local model named by a relative path that is gone from here: known by its directory's name
    assert StoreName("m", "d", "train").mismatches({"model": "models/m", "dataset": "d", "split": "train"}) == []
    for field, other in (("dataset", "e"), ("split", "test"), ("view", "no"), ("limit", 6), ("site", "residual"),
                         ("prompt_format", "raw")):
        name = StoreName(**{**dict(model="tiny-random", dataset="d", split="train", view="yes", limit=5, site="heads",
                                   prompt_format="chat"), field: other})
        assert [m.split(" ")[0] for m in name.mismatches(recorded)] == [{"limit": "only"}.get(field, field)]
    assert StoreName("tiny-random", "d", "train", "yes", 4, "heads", "chat").mismatches(recorded) == []  # a prefix
