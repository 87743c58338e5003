"""Places that cannot be written, names too long for a file system, empty search paths, numbers out of
range: one `error:` line and exit 2 from every command that takes them, never a traceback, nothing
written. And what is ambiguous made plain: `demo` on a search path, a shallow relative depth,
contradictory labels in an import."""

import errno
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli import Group, actstore, genies, probes
from conftest import example, write_distribution, write_vouched_results
from test_bad_input import fails
from test_genies_report import synthetic_rows

EXAMPLES = [example(f"Question {i}?\n### Response:\n", {f"right {i}": 1.0, f"wrong {i}": 0.0}) for i in range(6)]


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A data dir, a store of tiny-random's good/train, two finished runs, a plain file and a saved probe."""
    base = tmp_path_factory.mktemp("places")
    data = write_distribution(base / "data", "good", train=EXAMPLES)
    stores = base / "stores"
    made = CliRunner().invoke(actstore, ["extract", "--model", "tiny-random", "--dataset", "good", "--split", "train",
                                         "--data-dir", str(data), "--out", str(stores), "--no-progress"])
    assert made.exit_code == 0, made.output
    for name in ("a", "b"):
        write_vouched_results(base / name, synthetic_rows(), model="tiny-random")
    (base / "a-file").write_text("not a directory")
    store = str(stores / "tiny-random" / "good" / "train.plain.zarr")
    probe = base / "probe"
    fitted = CliRunner().invoke(probes, ["fit", "--method", "mms", "--layer", "1", "--train", store, "--out", str(probe),
                                         "--bootstrap", "0"])
    assert fitted.exit_code == 0, fitted.output
    return {"base": base, "data": data, "stores": stores, "store": store, "probe": probe}


def commands_writing_to(s, out):
    """Every command with an --out directory, pointed at ``out``."""
    return {
        "genies run": (genies, ["run", "--model", "tiny-random", "--shifts", "demo", "--methods", "mms", "--limit", "4",
                                "--out", out]),
        "genies compare": (genies, ["compare", s["base"] / "a", s["base"] / "b", "--out", out]),
        "probes fit": (probes, ["fit", "--method", "mms", "--layer", "1", "--train", s["store"], "--out", out]),
        "probes sweep": (probes, ["sweep", "--methods", "mms", "--train", s["store"], "--out", out]),
        "actstore extract": (actstore, ["extract", "--model", "tiny-random", "--dataset", "good", "--split", "train",
                                        "--data-dir", s["data"], "--out", out, "--no-progress"]),
    }


@pytest.mark.parametrize("command", ["genies run", "genies compare", "probes fit", "probes sweep", "actstore extract"])
@pytest.mark.parametrize("where", ["under a file", "under /proc"])
def test_an_out_that_cannot_be_written_is_one_line(setting, command, where):
    out = setting["base"] / "a-file" / "out" if where == "under a file" else "/proc/genies-out"
    group, args = commands_writing_to(setting, out)[command]
    fails(group, args, str(out), "cannot create")
    assert (setting["base"] / "a-file").read_text() == "not a directory"


def test_names_too_long_for_a_file_system_are_refused(setting, tmp_path):
    long_name = "a" * 300
    source = tmp_path / "pairs.json"
    source.write_text(json.dumps([{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(10)]))
    fails(genies, ["data", "import", source, "--name", long_name, "--data-dir", tmp_path / "d"],
          "(300 characters) is not a dataset name", "at most 128 characters")
    fails(actstore, ["extract", "--model", "tiny-random", "--dataset", long_name, "--data-dir", setting["data"],
                     "--out", tmp_path / "s"], "is not a dataset name")
    assert not (tmp_path / "d" / "distributions").exists() or not any((tmp_path / "d" / "distributions").iterdir())


@pytest.mark.parametrize("search_path", [":", "::", " : "])
def test_a_search_path_naming_no_directory_is_refused(setting, tmp_path, search_path):
    for group, args in ((genies, ["data", "validate"]),
                        (actstore, ["extract", "--model", "tiny-random", "--dataset", "good", "--out", tmp_path / "s"]),
                        (genies, ["run", "--model", "tiny-random", "--shifts", "demo", "--out", tmp_path / "r"])):
        fails(group, [*args, "--data-dir", search_path], "names no directory")
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", ["100000", "0", "-3"])
def test_threads_out_of_range_are_refused(setting, tmp_path, value):
    fails(genies, ["run", "--model", "tiny-random", "--shifts", "demo", "--out", tmp_path / "r", "--threads", value],
          "--threads must be at")
    fails(actstore, ["extract", "--model", "tiny-random", "--dataset", "good", "--data-dir", setting["data"],
                     "--out", tmp_path / "s", "--threads", value], "--threads must be at")
    if value != "0":  # probes: 0 is the BLAS library's default
        fails(probes, ["fit", "--method", "mms", "--layer", "1", "--train", setting["store"], "--threads", value],
              "--threads must be at")
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**70)])
def test_seeds_out_of_range_are_refused(setting, tmp_path, seed):
    source = tmp_path / "pairs.json"
    source.write_text(json.dumps([{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(10)]))
    for group, args in (
            (genies, ["run", "--model", "tiny-random", "--shifts", "demo", "--out", tmp_path / "r"]),
            (probes, ["fit", "--method", "mms", "--layer", "1", "--train", setting["store"]]),
            (probes, ["eval", setting["probe"], "--eval", setting["store"]]),
            (genies, ["data", "import", source, "--name", "pairs", "--data-dir", tmp_path / "d"])):
        fails(group, [*args, "--seed", seed], "--seed must be at")
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()


def test_a_file_system_refusal_anywhere_is_one_line():
    """Past every check, a path the file system refuses is still one line naming it."""
    @click.group(cls=Group)
    def group():
        pass

    @group.command()
    def write():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", "somewhere/deep/file")

    @group.command()
    def bug():
        raise OSError(errno.EIO, "Input/output error")  # no path: not the user's, so not hidden

    fails(group, ["write"], "somewhere/deep/file: Not a directory")
    assert CliRunner().invoke(group, ["bug"]).exit_code == 1


def test_demo_on_a_search_path_is_the_bundled_data_never_a_folder_named_demo(tmp_path, monkeypatch):
    from distributions.data import resolve_data_dir
    from distributions.demo_data import ensure_demo_data

    monkeypatch.chdir(tmp_path)
    write_distribution(tmp_path / "demo", "impostor", train=EXAMPLES)  # a literal ./demo folder
    write_distribution(tmp_path / "mine", "good", train=EXAMPLES)
    assert resolve_data_dir("demo").dirs == (ensure_demo_data(),)
    assert resolve_data_dir("mine:demo").dirs == (Path("mine"), ensure_demo_data())
    assert resolve_data_dir("./demo").dirs[0].resolve() == (tmp_path / "demo").resolve()  # a folder: said as a path


def test_a_shallow_relative_depth_is_a_block_never_the_embeddings():
    from genies.plan import depth_layer

    for n_layers in (2, 4, 30, 80):
        assert all(1 <= depth_layer(depth, n_layers) <= n_layers for depth in (1e-6, 0.01, 0.1, 0.5, 0.99))


def test_contradictory_labels_are_reported_at_import(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(10)]
    rows += [{"prompt": "q3", "chosen": "no", "rejected": "yes"}, {"prompt": "q5", "chosen": "yes", "rejected": "no"}]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = CliRunner().invoke(genies, ["data", "import", str(source), "--name", "pairs", "--data-dir",
                                         str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {source}: line 11: prefers 'no', but {source}: line 4 (the same prompt and "
                        "responses) prefers 'yes': contradictory labels"]  # q5 repeated, agreeing: not reported
    assert "1 row(s) contradict an earlier one" in result.output
