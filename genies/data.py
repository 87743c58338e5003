"""GENIES data directories: ``<data_dir>/distributions/<name>/{train,test}.json``.

Which directory (``--data-dir``, ``$GENIES_DATA``, the per-user cache, or ``demo``), the
distributions it holds, and one split by name. Each file is read and checked by
actstore/split_file.py (the format extraction reads).
"""

from __future__ import annotations

import os
from pathlib import Path

from actstore.common import UserError, default_data_dir
from actstore.names import check_name
from actstore.split_file import Split, load_split_file

SPLITS = ("train", "test")
DATA_DIR_HELP = ("Directory holding distributions/ (default: $GENIES_DATA, else the per-user cache); 'demo' = the "
                 "bundled demo data.")


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``--data-dir``, then ``$GENIES_DATA``, then the per-user cache. ``demo`` = the demo data."""
    chosen = explicit or os.environ.get("GENIES_DATA")
    if chosen is None:
        return default_data_dir()
    if str(chosen) == "demo":
        from genies.demo_data import ensure_demo_data

        return ensure_demo_data()
    return Path(chosen).expanduser()


def distributions_dir(data_dir: Path) -> Path:
    return data_dir / "distributions"


def list_distributions(data_dir: Path) -> list[str]:
    root = distributions_dir(data_dir)
    if not root.is_dir():
        raise UserError(
            f"{root}: no GENIES data here (run `genies data download`, or pass --data-dir / "
            "set GENIES_DATA to the directory that holds distributions/)"
        )
    return sorted(p.name for p in root.iterdir()  # hidden names: an import's staging and scratch directories
                  if not p.name.startswith(".") and ((p / "train.json").is_file() or (p / "test.json").is_file()))


def split_path(data_dir: Path, name: str, split: str) -> Path:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    directory = distributions_dir(data_dir) / check_name(name)
    if not directory.is_dir():
        known = list_distributions(data_dir)
        hint = _closest(name, known)
        raise UserError(f"{directory}: unknown dataset {name!r}{hint}")
    return directory / f"{split}.json"


def load_split(data_dir: Path, name: str, split: str, *, skip_bad: bool = False) -> Split:
    """Load one split. Strict by default: the first bad example raises UserError.

    With ``skip_bad`` the bad examples are left out and listed in ``Split.skipped``.
    """
    path = split_path(data_dir, name, split)
    return load_split_file(path, dataset=name, split=split, skip_bad=skip_bad)


def _closest(name: str, known: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
