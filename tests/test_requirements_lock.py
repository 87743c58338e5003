"""requirements.lock pins our dependencies and nothing of torch's own tree, so that the same lock installs
beside the CPU torch of a laptop and the CUDA torch a GPU machine's index serves (tools/lock.py)."""

import importlib.util
import re
from importlib import metadata

from packaging.requirements import Requirement

from conftest import REPO

spec = importlib.util.spec_from_file_location("lock_tool", REPO / "tools" / "lock.py")
lock_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock_tool)


def locked_packages() -> set[str]:
    return set(lock_tool.parse_lock((REPO / "requirements.lock").read_text()))


def requirements_of(name: str, extras: tuple[str, ...] = ()) -> set[tuple[str, tuple[str, ...]]]:
    """What the installed distribution ``name`` with ``extras`` requires on this machine (markers evaluated):
    (name, extras asked of it) pairs."""
    found = set()
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in ("", *extras)):
            found.add((lock_tool.canonical(requirement.name), tuple(sorted(requirement.extras))))
    return found


def closure(start: set[tuple[str, tuple[str, ...]]], *, avoid: set[str] = frozenset()) -> set[str]:
    """Every installed package that ``start`` brings in (with the extras asked of each), not walking through
    ``avoid``."""
    seen, todo = set(), [item for item in start if item[0] not in avoid]
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.add(item)
        try:
            todo += [found for found in requirements_of(*item) if found not in seen and found[0] not in avoid]
        except metadata.PackageNotFoundError:
            pass
    return {name for name, _ in seen}


def test_the_lock_holds_nothing_of_torchs_own_tree():
    """Torch's tree from the installed torch's metadata (what only torch brings in: everything it requires, less
    what our other dependencies need without it), plus the parts a CPU build does not declare (triton, nvidia-*,
    cuda-*): none of it is in the lock."""
    shared = closure(requirements_of("genies-toolkit", ("dev", "gemma3")), avoid={"torch"})
    own_tree = closure(requirements_of("torch")) - shared
    locked = locked_packages()
    assert "torch" not in locked
    assert not locked & own_tree, f"the lock pins torch's own dependencies: {sorted(locked & own_tree)}"
    build = sorted(name for name in locked if lock_tool.is_torch_build_package(name))
    assert not build, f"the lock pins parts of one torch build: {build}"
    assert {"transformers", "accelerate", "zarr", "scikit-learn"} <= locked  # it still pins ours


def test_stripping_keeps_what_our_dependencies_share_with_torch():
    text = "\n".join([
        "cuda-toolkit==13.2.2", "    # via torch",
        "nvidia-cublas==13.4.1.3", "    # via", "    #   cuda-toolkit", "    #   nvidia-cudnn-cu13",
        "nvidia-cudnn-cu13==9.26.0.51", "    # via torch",
        "mpmath==1.3.0", "    # via sympy",
        "sympy==1.14.0", "    # via", "    #   cfn-lint", "    #   torch",
        "setuptools==84.2.1", "    # via torch",
        "fsspec==2026.9.0", "    # via", "    #   genies-toolkit (pyproject.toml)", "    #   torch",
        "",
    ])
    stripped = lock_tool.strip_torch_tree(text)
    assert set(lock_tool.parse_lock(stripped)) == {"mpmath", "sympy", "fsspec"}
    assert re.search(r"^fsspec==2026\.9\.0\n    # via\n    #   genies-toolkit \(pyproject\.toml\)\n    #   torch$", stripped,
                     re.M)
    assert lock_tool.strip_torch_tree(stripped) == stripped
