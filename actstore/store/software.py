"""Which software made a result: the versions of the libraries that compute it and the toolkit's
commit, recorded in every store and run directory so that a study can say what produced it."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from actstore import __version__

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "zarr")
REPO = Path(__file__).resolve().parents[1]


def software_versions() -> dict[str, str | None]:
    """{"toolkit": version, "commit": git commit of the checkout (None when installed without one),
    and each library's installed version}."""
    found: dict[str, str | None] = {"toolkit": __version__, "commit": toolkit_commit()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def toolkit_commit(repo: Path = REPO) -> str | None:
    """The commit checked out in ``repo`` (read from .git, no subprocess), or None."""
    git = repo / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head.removeprefix("ref: ")
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(f" {ref}"):
                return line.split()[0]
    except OSError:
        return None
    return None


def software_differences(a: dict | None, b: dict | None) -> list[str]:
    """``name A -> B`` for every recorded version that differs between two records (a record made
    before versions were recorded says so)."""
    if not a or not b:
        return ["not recorded for " + " and ".join(name for name, found in (("A", a), ("B", b)) if not found)]
    return [f"{name} {a.get(name)} -> {b.get(name)}" for name in dict.fromkeys([*a, *b]) if a.get(name) != b.get(name)]
