"""The packages' layers, enforced: import-linter's contracts in pyproject.toml (cli > genies >
finetune | probes > actstore | registry > distributions | manifests > common; inside actstore, engine >
models | store), every import counted, lazy (inside a function) ones included."""

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
    assert "2 kept, 0 broken" in result.stdout


def copy_with_import(tmp_path: Path, module: str, imported: str, name: str) -> Path:
    """A copy of the packages where ``module`` (a path under the repository) gains, inside a function, the
    import ``from imported import name``."""
    for package in ("cli", "genies", "finetune", "probes", "actstore", "registry", "distributions", "manifests",
                    "common"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as source:
        source.write(f"\n\ndef _wrong_way():\n    from {imported} import {name}\n\n    return {name}\n")
    return tmp_path


def test_a_lazy_upward_import_breaks_the_contract(tmp_path):
    """The same check on a copy of the packages with one import, inside a function, from the data
    layer up to the runner: the contract must name it."""
    result = lint_imports(copy_with_import(tmp_path, "distributions/data.py", "genies.runner", "run_benchmark"))
    assert result.returncode != 0 and "1 broken" in result.stdout, result.stdout
    assert "distributions.data -> genies.runner" in result.stdout


@pytest.mark.parametrize("module, imported, name, shown", [
    ("actstore/store/info.py", "actstore.engine.views", "VIEWS", "actstore.store.info -> actstore.engine.views"),
    ("actstore/models/spec.py", "actstore.store.layers", "parse_layers",
     "actstore.models.spec -> actstore.store.layers"),
    ("actstore/store/roots.py", "actstore.models.devices", "default_device",
     "actstore.store.roots -> actstore.models.devices"),
])
def test_a_wrong_way_import_between_actstores_rooms_breaks_the_contract(tmp_path, module, imported, name, shown):
    """Inside actstore the store and the models use neither the engine nor each other: one such import, even
    lazy, breaks the rooms' contract (and only it)."""
    result = lint_imports(copy_with_import(tmp_path, module, imported, name))
    assert result.returncode != 0 and "1 kept, 1 broken" in result.stdout, result.stdout
    assert shown in result.stdout
