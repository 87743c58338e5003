"""Stores named with their limit by earlier versions (``<split>.limit<N>[.heads][.chat].<view>.zarr``)
moved to the one name of their (model, dataset, split, view), where they grow like any store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actstore.store.locations import PLACE, store_name


@dataclass(frozen=True)
class Migration:
    source: str
    target: str
    moved: bool
    reason: str = ""  # why not, where not moved


def new_name(path: Path) -> Path | None:
    """The name a legacy store moves to; None for a store that is not named with a limit."""
    match = PLACE.match(path.name)
    if match is None or match["limit"] is None:
        return None
    return path.with_name(store_name(match["split"], match["view"], site="heads" if match["heads"] else "residual",
                                     prompt_format=match["format"] or "raw"))


def legacy_stores(url: str) -> list[Path]:
    """Legacy stores that would move to ``url`` (a local path), most examples first."""
    place = Path(url)
    if "://" in str(url) or not place.parent.is_dir():
        return []
    found = [path for path in place.parent.glob("*.zarr") if new_name(path) == place]
    return sorted(found, key=lambda path: -int(PLACE.match(path.name)["limit"]))


def adopt_legacy(url: str) -> Path | None:
    """Move the legacy store with the most examples to ``url`` where nothing is there yet; the one moved."""
    place = Path(url)
    if place.exists():
        return None
    for legacy in legacy_stores(url):
        legacy.rename(place)
        return legacy
    return None


def migrate(root: str) -> list[Migration]:
    """Every legacy store under ``root`` (a local directory) moved to its new name, the one with the most
    examples where several would share it; the others stay and are said so."""
    moves = []
    for path in sorted(Path(root).glob("*/*/*.zarr")):
        target = new_name(path)
        if target is None or not path.exists():
            continue
        candidates = legacy_stores(str(target))
        if target.exists():
            moves.append(Migration(str(path), str(target), False, "a store of the new name exists already"))
        elif candidates and candidates[0] != path:
            moves.append(Migration(str(path), str(target), False,
                                   f"{candidates[0].name} holds more examples and moves there"))
        else:
            path.rename(target)
            moves.append(Migration(str(path), str(target), True))
    return moves
