"""The README's tour (steps 1 and 2, store names) runs as written. The notebook walkthrough and the
estimator example moved to docs/extraction.md and docs/probes.md: tests/test_docs.py runs every page."""

import re
import shlex

import pytest
from click.testing import CliRunner

import cli
from conftest import REPO

README = (REPO / "README.md").read_text()


def fenced_blocks(language: str = "") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


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
