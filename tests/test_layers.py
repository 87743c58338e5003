"""The packages' layers, enforced: import-linter's contract in pyproject.toml (cli > genies >
finetune | probes > actstore | registry > distributions | manifests > common), every import counted,
lazy (inside a function) ones included."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the packages under ``root``: run without site's .pth files (``-S``), so that the
    editable install's finder cannot answer for a copy of the packages, with site-packages on the path."""
    site_packages = sysconfig.get_paths()["purelib"]
    code = ("import sys; from importlinter.cli import lint_imports_command; "
            f"sys.argv = ['lint-imports', '--config', {str(root / 'pyproject.toml')!r}, '--no-cache']; "
            "sys.exit(lint_imports_command())")
    return subprocess.run([sys.executable, "-S", "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), site_packages])})


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
