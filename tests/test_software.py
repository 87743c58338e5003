"""Every store and run directory records the software that made it; `genies compare` says when two differ."""

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from actstore.store.software import LIBRARIES, software_differences, software_versions, toolkit_commit
from cli import genies

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example-cross-model-smollm2"


def test_versions_of_the_libraries_and_the_checkout(tmp_path):
    found = software_versions()
    assert set(found) == {"toolkit", "commit", *LIBRARIES}
    import torch
    import transformers

    assert found["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert found["transformers"] == transformers.__version__
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    assert toolkit_commit(tmp_path) is None  # no such ref yet
    (git / "packed-refs").write_text("# pack-refs\nabc123 refs/heads/main\n")
    assert toolkit_commit(tmp_path) == "abc123"
    (git / "refs" / "heads" / "main").write_text("def456\n")
    assert toolkit_commit(tmp_path) == "def456"


def test_differences_name_each_version_that_changed():
    a = {"toolkit": "0.1.0", "transformers": "5.24.0", "torch": "2.13.0"}
    assert software_differences(a, dict(a)) == []
    assert software_differences(a, {**a, "transformers": "5.30.0"}) == ["transformers 5.24.0 -> 5.30.0"]
    assert software_differences(None, a) == ["not recorded for A"]


def test_a_store_and_run_json_record_it_and_compare_says_when_runs_differ(tmp_path):
    from actstore.engine.extraction import ExtractConfig, extract
    from actstore.store import open_store
    from conftest import TOY_EXAMPLES, write_distribution

    data = write_distribution(tmp_path / "data", "toy", TOY_EXAMPLES, TOY_EXAMPLES)
    [made] = extract(ExtractConfig(model="tiny-random", datasets=("toy",), splits=("test",), data_dir=str(data),
                                   out=str(tmp_path / "s"), progress=False, layers="1"))
    assert open_store(made.url).meta["software"] == software_versions()
    runs = []
    for name, transformers_version in (("a", "5.24.0"), ("b", "5.30.0")):
        run = shutil.copytree(EXAMPLE, tmp_path / name)
        info = json.loads((run / "run.json").read_text())
        info["software"] = {**software_versions(), "transformers": transformers_version}
        (run / "run.json").write_text(json.dumps(info))
        runs.append(run)
    result = CliRunner().invoke(genies, ["compare", str(runs[0]), str(runs[1])])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "note: the runs differ in software: transformers 5.24.0 -> 5.30.0"


def test_run_json_settings_carry_the_software(tmp_path):
    from genies.plan import RunConfig
    from genies.runner import _run_settings

    assert _run_settings(RunConfig(model="tiny-random", out=tmp_path), None, "now")["software"] == software_versions()
