"""The packages' layers, enforced: import-linter's contract in pyproject.toml (cli > genies >
finetune | probes > actstore | registry > distributions | manifests > common), every import counted,
lazy (inside a function) ones included."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    command = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([command, "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": ""}, timeout=120)


def test_no_import_runs_back_up_a_layer():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_a_lazy_upward_import_breaks_the_contract(tmp_path):
    """The same check on a copy of the packages with one import, inside a function, from the data
    layer up to the runner: the contract must name it."""
    for name in ("cli", "genies", "finetune", "probes", "actstore", "registry", "distributions", "manifests", "common"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with (tmp_path / "distributions" / "data.py").open("a") as module:
        module.write("\n\ndef _upward():\n    from genies.runner import run_benchmark\n\n    return run_benchmark\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0 and "1 broken" in result.stdout, result.stdout
    assert "distributions.data -> genies.runner" in result.stdout
