"""GENIES data directories: ``<data_dir>/distributions/<name>/{train,test}.json``.

Which directory (``--data-dir``, ``$GENIES_DATA``, the per-user cache, or ``demo``), the
distributions it holds, and one split by name. Each file is read and checked by
distributions/split_file.py (the format extraction reads).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common import UserError, default_data_dir
from common.names import check_name
from distributions.split_file import Split, load_split_file

SPLITS = ("train", "test")
DATA_DIR_HELP = ("Directories holding distributions/, searched in order, separated by ':' (default: $GENIES_DATA, "
                 "then the per-user cache); 'demo' = the bundled demo data. Imports go to the first.")


@dataclass(frozen=True)
class DataDirs:
    """Data directories searched in order for a distribution by name (a name held by two is an
    error naming both), and the one new distributions are written to: the first the user named with
    ``--data-dir``, else the per-user data directory (never ``$GENIES_DATA``, a shared directory)."""

    dirs: tuple[Path, ...]
    writable: tuple[Path, ...]  # where new distributions may go, in order of preference

    def __str__(self) -> str:
        return os.pathsep.join(map(str, self.dirs))

    @property
    def write_to(self) -> Path:
        """The first of ``writable`` that can be written (or created) here."""
        for directory in self.writable:
            if directory.exists() and not directory.is_dir():
                raise UserError(f"{directory}: is a file, not a data directory (one that holds distributions/)")
            existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
            if existing is not None and existing.is_dir() and os.access(existing, os.W_OK):
                return directory
        raise UserError(f"{os.pathsep.join(map(str, self.writable))}: no data directory here can be written; pass a "
                        "writable --data-dir first")


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> DataDirs:
    """``--data-dir`` (``a:b`` searches a, then b), else ``$GENIES_DATA`` then the per-user cache.
    ``demo`` = the demo data."""
    if explicit is not None:
        named = _paths(explicit)
        if not named:
            raise UserError(f"--data-dir {str(explicit)!r} names no directory (give DIR, or DIR{os.pathsep}DIR... "
                            "to search several, or demo)")
        return DataDirs(named, named)
    user = default_data_dir()
    shared = _paths(os.environ.get("GENIES_DATA") or "")
    return DataDirs(tuple(dict.fromkeys([*shared, user])), (user,))


def _paths(text: str | os.PathLike) -> tuple[Path, ...]:
    """The directories of a search path; ``demo`` in it is the bundled demo data (a folder named demo: ``./demo``)."""
    return tuple(_demo_dir() if part == "demo" else Path(part).expanduser()
                 for part in str(text).split(os.pathsep) if part.strip())


def _demo_dir() -> Path:
    from distributions.demo_data import ensure_demo_data

    return ensure_demo_data()


def searched(data: DataDirs | Path) -> tuple[Path, ...]:
    return data.dirs if isinstance(data, DataDirs) else (Path(data),)


def distributions_dir(data_dir: Path) -> Path:
    return data_dir / "distributions"


def list_distributions(data: DataDirs | Path) -> list[str]:
    """Every distribution name on the search path (a name held by two directories is an error)."""
    roots = [distributions_dir(d) for d in searched(data) if distributions_dir(d).is_dir()]
    if not roots:
        raise UserError(
            f"{distributions_dir(searched(data)[0])}: no GENIES data here (run `genies data download`, or pass "
            "--data-dir / set GENIES_DATA to the directory that holds distributions/)"
        )
    found: dict[str, Path] = {}
    for root in roots:
        for name in sorted(p.name for p in root.iterdir()  # hidden names: an import's staging and scratch
                           if not p.name.startswith(".") and ((p / "train.json").is_file() or (p / "test.json").is_file())):
            if name in found:
                raise UserError(f"distribution {name!r} is in two data directories, {found[name]} and {root}; "
                                "rename or remove one")
            found[name] = root
    return sorted(found)


def distribution_dir(data: DataDirs | Path, name: str) -> Path:
    """The directory of distribution ``name`` on the search path."""
    check_name(name)
    holding = [distributions_dir(d) / name for d in searched(data) if (distributions_dir(d) / name).is_dir()]
    if len(holding) > 1:
        raise UserError(f"distribution {name!r} is in two data directories, {holding[0].parent} and "
                        f"{holding[1].parent}; rename or remove one")
    if not holding:
        known = list_distributions(data)
        where = distributions_dir(searched(data)[0]) / name if len(searched(data)) == 1 else f"{data}"
        raise UserError(f"{where}: unknown dataset {name!r}{_closest(name, known)}")
    return holding[0]


def split_path(data: DataDirs | Path, name: str, split: str) -> Path:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    return distribution_dir(data, name) / f"{split}.json"


def load_split(data_dir: DataDirs | Path, name: str, split: str, *, skip_bad: bool = False) -> Split:
    """Load one split. Strict by default: the first bad example raises UserError.

    With ``skip_bad`` the bad examples are left out and listed in ``Split.skipped``.
    """
    path = split_path(data_dir, name, split)
    return load_split_file(path, dataset=name, split=split, skip_bad=skip_bad)


def _closest(name: str, known: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
