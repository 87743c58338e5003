"""`probes fit / eval / sweep / methods` through the CLI; errors are one line and exit 2."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from cli import probes
from conftest import REPO
from synthetic import planted, write_stores


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    train = planted(seed=0, strength=6.0, n_heads=3, signal_heads=((2, 1), (3, 0)))
    return {
        "root": root,
        "train": write_stores(train, root),
        "test": write_stores(planted(seed=1, split="test", strength=6.0, direction=train.direction), root),
        "other": write_stores(planted(seed=2, dataset="truthy", split="test", strength=6.0,
                                      direction=train.direction), root),
        "plain_only": write_stores(planted(seed=3, dataset="bare", views=("plain",)), root),
        "foreign": write_stores(planted(seed=4, dataset="truthy", split="test", model="other-model"), root),
    }


def run(*args):
    return CliRunner().invoke(probes, [str(a) for a in args])


def assert_user_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_fit_prints_metrics_for_source_test_and_eval(stores):
    result = run("fit", "--method", "lat", "--layer", 2, "--train", stores["train"]["plain"],
                 "--eval", stores["other"]["plain"])
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[1].split()
    for column in ("accuracy", "auroc", "brier", "rms_calibration_error"):
        assert column in header
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"planted/train", "planted/test", "truthy/test"}
    assert float(rows["truthy/test"][header.index("accuracy") + 1]) > 0.95  # +1: the role column has 2 words


def test_fit_json_save_and_eval(stores, tmp_path):
    out = tmp_path / "probe"
    result = run("fit", "--method", "cra", "--layer", 2, "--train", stores["train"]["plain"], "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["method"] == "cra" and report["saved"] == str(out)
    assert [r["role"] for r in report["results"]] == ["train (in-sample)", "source test"]
    source_test = report["results"][1]
    assert source_test["accuracy"] > 0.95 and 0 <= source_test["brier"] < 0.1
    evaluated = run("eval", out, "--eval", stores["test"]["plain"], "--json")
    assert evaluated.exit_code == 0, evaluated.output
    again = json.loads(evaluated.stdout)["results"][0]
    assert again["accuracy"] == source_test["accuracy"] and again["auroc"] == source_test["auroc"]


def test_eval_refuses_store_from_another_model(stores, tmp_path):
    out = tmp_path / "probe"
    assert run("fit", "--method", "mms", "--layer", 1, "--train", stores["train"]["plain"], "--out", out).exit_code == 0
    assert_user_error(run("eval", out, "--eval", stores["foreign"]["plain"]), "other-model", "synthetic-model")


def test_head_wise_and_layer_free_methods(stores):
    result = run("fit", "--method", "mms-heads", "--top-k", 2, "--train", stores["train"]["plain"], "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["results"][0]["accuracy"] > 0.95
    # The test split was extracted without heads: reported, not fatal, since nobody asked for it.
    assert [r["role"] for r in report["results"]] == ["train (in-sample)"]
    assert "source test split skipped" in report["notes"][0] and "--site heads" in report["notes"][0]
    assert run("fit", "--method", "zero-shot", "--train", stores["train"]["plain"]).exit_code == 0


@pytest.mark.parametrize("args, fragments", [
    (["--method", "pca", "--layer", 1], ["unknown method 'pca'"]),
    (["--method", "mms", "--layer", 31], ["layer 31 is out of range", "0..3"]),
    (["--method", "mms"], ["needs --layer"]),
    (["--method", "lat-stim", "--layer", 2], ["drop --layer"]),
])
def test_fit_bad_input_is_one_line(stores, args, fragments):
    assert_user_error(run("fit", "--train", stores["train"]["plain"], *args), *fragments)


def test_missing_store_and_missing_views(stores):
    assert_user_error(run("fit", "--method", "mms", "--layer", 1, "--train", stores["root"] / "nowhere/train.plain.zarr"),
                      "no activation store here")
    assert_user_error(run("fit", "--method", "ccs", "--layer", 1, "--train", stores["plain_only"]["plain"]),
                      "missing view(s) yes,no",
                      "actstore extract --model synthetic-model --dataset bare --split train --views yes,no")
    assert_user_error(run("fit", "--method", "lat-stim", "--train", stores["plain_only"]["plain"]),
                      "missing view(s) stim", "--views stim")


def test_sweep_cli(stores, tmp_path):
    result = run("sweep", "--methods", "mms,lat,ccs,cra,logreg", "--train", stores["train"]["plain"],
                 "--eval", stores["other"]["plain"], "--layers", "all", "--out", tmp_path, "--bootstrap", 0)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["method", "best_layer", "validation_pairs", "near_ties", *(f"{name}{end}" for name in ("validation", "planted/test", "truthy/test")
                                                        for end in ("", "_low", "_high"))]
    assert [line.split()[0] for line in lines[1:6]] == ["mms", "lat", "ccs", "cra", "logreg"]
    assert (tmp_path / "sweep.csv").is_file() and (tmp_path / "sweep.png").is_file()
    assert len((tmp_path / "sweep.csv").read_text().splitlines()) == 1 + 5 * 4 * 3
    assert_user_error(run("sweep", "--methods", "mms,nope", "--train", stores["train"]["plain"], "--out", tmp_path),
                      "unknown method 'nope'")
    a_file = tmp_path / "sweep.csv"
    assert_user_error(run("sweep", "--methods", "mms", "--train", stores["train"]["plain"], "--eval",
                          stores["other"]["plain"], "--out", a_file), f"--out {a_file}: is a file")


def test_methods_lists_every_method():
    import registry

    result = run("methods")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == list(registry.store_methods())
    assert [line.split()[:3] for line in result.stdout.splitlines() if line.startswith("zero-shot")] == [["zero-shot", "plain", "none"]]


def test_probes_never_imports_transformers(stores, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from cli import probes as probes_cli
        from click.testing import CliRunner
        import probes.commands, probes.sweep, probes.plot
        result = CliRunner().invoke(probes_cli, ["fit", "--method", "ccs", "--layer", "2", "--train",
                                             {str(stores["train"]["plain"])!r}, "--out", {str(tmp_path / "p")!r}])
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(probes_cli, ["sweep", "--methods", "mms,lat", "--layers", "1", "--train",
                                             {str(stores["train"]["plain"])!r}, "--out", {str(tmp_path / "s")!r}])
        assert result.exit_code == 0, result.output
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("transformers", "accelerate", "peft"))
        print("LOADED", loaded)
        sys.exit(1 if loaded else 0)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LOADED []" in done.stdout
