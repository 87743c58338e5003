"""The README's tour (steps 1 and 2, store names) and its notebook walkthrough run as written."""

import re
import shlex

import pytest
from click.testing import CliRunner

import cli
from conftest import REPO

README = (REPO / "README.md").read_text()


def fenced_blocks(language: str = "") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


@pytest.mark.bundled
def test_notebook_walkthrough_runs_as_written(tmp_path, monkeypatch):
    code = next(block for block in fenced_blocks("python") if "to_xarray" in block and "import_distribution" in block)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    namespace: dict = {}
    exec(compile(code, "README.md (notebook walkthrough)", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["acts"].dims == ("sequence", "layer", "hidden")
    assert namespace["gap"].shape == (576,)
    assert (namespace["work"] / "sweep.png").stat().st_size > 0
    assert {row.method for row in namespace["sweep"].rows} == {"mms", "lat"}


def test_estimator_example_runs_as_written(tmp_path, monkeypatch):
    code = next(block for block in fenced_blocks("python") if "from probes import CCS, LAT, LogReg" in block)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("GENIES_HOME", str(tmp_path / "home"))  # the demo data is written under it
    namespace: dict = {}
    exec(compile(code, "README.md (estimator example)", "exec"), namespace)  # noqa: S102 - our own README
    table, sweep = namespace["table"], namespace["sweep"]
    assert set(table["method"]) == {"lat", "ccs", "logreg"} and set(table["role"]) == {"validation", "target"}
    assert len(table) == 3 * 5 * 2  # methods x layers (tiny-random: embeddings + 4 blocks) x (validation, target)
    assert {best.method for best in sweep.best} == {"lat", "ccs", "logreg"}
    assert namespace["ccs"].get_params()["seed"] == 1 and namespace["ccs"].trained_on_["dataset"] == "arith_easy"


def tour_commands() -> list[list[str]]:
    tour = next(block for block in fenced_blocks() if "# 1. run the model once" in block)
    steps = tour[tour.index("# 1."):tour.index("# 3.")].replace("\\\n", " ")
    return [shlex.split(line.split("#")[0]) for line in steps.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.bundled
def test_tour_steps_with_store_names_run_as_written(genies_data, tmp_path, monkeypatch, bundled_model):
    from common import default_model_cache

    models = default_model_cache()  # the bundled model's converted copy, reused under the test's own cache
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "models").symlink_to(models, target_is_directory=True)
    monkeypatch.setenv("GENIES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GENIES_DATA", str(genies_data))
    monkeypatch.chdir(tmp_path)
    commands = tour_commands()
    assert [c[:2] for c in commands] == [["actstore", "extract"], ["actstore", "ls"], ["actstore", "info"],
                                         ["probes", "fit"], ["probes", "sweep"]]
    for program, *args in commands:
        result = CliRunner().invoke(getattr(cli, program), args + (["--no-progress"] if args[0] == "extract" else []))
        assert result.exit_code == 0, (program, args, result.output)
    assert (tmp_path / "sweep" / "sweep.csv").is_file()
    import pandas

    assert set(pandas.read_csv(tmp_path / "sweep" / "sweep.csv")["method"]) == {"mms", "lat", "ccs", "cra", "logreg"}
