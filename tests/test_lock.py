"""`make install` installs from requirements.lock: every dependency pyproject.toml names is pinned
there, and the libraries that compute results are installed at their pinned versions."""

import re
import tomllib
from importlib import metadata

from conftest import REPO

COMPUTING = ("transformers", "peft", "accelerate", "zarr", "numcodecs", "numpy", "scikit-learn", "safetensors", "gguf")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    return {normalized(name): version for name, version in (line.split("==") for line in lines if "==" in line
                                                             and not line.startswith(("#", " ")))}


def test_every_dependency_of_pyproject_is_pinned_in_the_lock_except_torch():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    named = [*project["dependencies"], *project["optional-dependencies"]["dev"],
             *project["optional-dependencies"]["gemma3"]]
    names = {normalized(re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]) for requirement in named}
    locked = pins()
    assert "torch" not in locked  # installed apart, only when missing (a CPU or CUDA build)
    assert sorted(names - {"torch"} - set(locked)) == []


def test_the_libraries_that_compute_results_are_installed_at_their_pinned_versions():
    locked = pins()
    installed = {name: metadata.version(name) for name in COMPUTING}
    assert installed == {name: locked[normalized(name)] for name in COMPUTING}, "run `make install` (or `make lock`)"
