"""What a store holds (``actstore info``) and which stores lie under a root (``actstore ls``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import fsspec

from common import UserError, format_layers
from actstore.store.locations import STORE_SUFFIX
from common.model_names import model_name
from actstore.store.opening import find_store

# model/dataset/store under a root; one more level lets ``ls`` also take a model directory's parent.
MAX_DEPTH = 4


@dataclass(frozen=True)
class StoreInfo:
    url: str
    model: str
    model_id: str
    dataset: str
    split: str
    view: str
    site: str
    layers: str  # compact, e.g. "0..30"
    hidden_size: int
    dtype: str  # storage
    compute_dtype: str  # the model's, during extraction
    attention: str  # the model's attention implementation, during extraction
    origin: str  # extracted here, or what computed the activations of a written store (write_store)
    sequences: int
    examples: int
    blocks_done: int
    blocks: int
    size_bytes: int
    complete: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def as_row(self) -> dict:
        return {
            "store": self.url, "model": model_name(self.model) if self.model else "", "dataset": self.dataset, "split": self.split, "view": self.view,
            "layers": self.layers, "dtype": self.dtype, "sequences": self.sequences, "size": human_bytes(self.size_bytes),
            "state": "complete" if self.complete else f"incomplete {self.blocks_done}/{self.blocks} blocks",
        }


@dataclass(frozen=True)
class UnreadableStore:
    """A ``*.zarr`` directory under the root that ``actstore info`` cannot describe."""

    url: str
    reason: str

    def as_row(self) -> dict:
        return {"store": self.url, "state": self.reason}


LS_COLUMNS = ["store", "model", "dataset", "split", "view", "layers", "dtype", "sequences", "size", "state"]


@dataclass(frozen=True)
class Verification:
    blocks_checked: int
    columns: int  # arrays (one per layer of the layered ones) checked block by block
    seconds: float


def store_info(url: str) -> StoreInfo:
    store = _readable(url)
    meta = store.meta
    done = store.blocks_done()
    return StoreInfo(
        url=str(url), model=str(meta.get("model", "")), model_id=str(meta.get("model_id", "")),
        dataset=str(meta.get("dataset", "")), split=str(meta.get("split", "")), view=str(meta.get("view", "")),
        site=str(meta.get("site", "residual")), layers=format_layers(list(meta["layers"])),
        hidden_size=int(meta["hidden_size"]), dtype=str(meta["dtype"]),
        compute_dtype=_recorded(meta, "compute_dtype"), attention=_recorded(meta, "attention"), origin=_origin(meta),
        sequences=int(meta["n_sequences"]),
        examples=int(meta["n_examples"]), blocks_done=int(done.sum()), blocks=len(done),
        size_bytes=size_on_disk(url), complete=bool(meta.get("complete")),
    )


def _origin(meta: dict) -> str:
    if not meta.get("imported_from"):
        return "extracted"
    read = ", ".join(f"{key} {meta[key]}" for key in ("module", "position") if meta.get(key))
    return f"written from {meta['imported_from']}" + (f" ({read})" if read else "")


def _recorded(meta: dict, setting: str) -> str:
    """An extraction setting the store records (stores made before it was recorded say so)."""
    return str((meta.get("config") or {}).get(setting, "unknown (not recorded)"))


def verify_store(url: str) -> Verification:
    """Read every block of every array and check it against its recorded checksum; the first
    damaged block (and how many there are) is a UserError naming the repair command."""
    import time

    started = time.perf_counter()
    store = _readable(url)
    damage = store.verify()
    if damage:
        raise store.damaged_error(damage)
    layout = store.layout
    return Verification(int(store.blocks_done().sum()), len(layout.checksum_columns) + len(store.meta["label_checksums"]),
                        time.perf_counter() - started)


def _readable(url: str):
    store = find_store(url)
    if store is None:
        raise no_store_error(url)
    if store.meta.get("creating"):
        raise UserError(f"{url}: incomplete store (its creation was interrupted); "
                        "re-run the same `actstore extract` command to finish it")
    store.check_consistent()
    return store


def list_stores(root: str) -> list[StoreInfo | UnreadableStore]:
    """Every store under ``root`` (a directory or fsspec URL), sorted by location; a store that
    cannot be read (e.g. its creation was interrupted) is listed with the reason."""
    fs, path = fsspec.core.url_to_fs(str(root))
    if not fs.isdir(path):
        raise UserError(f"{root}: no such directory")
    base = path.rstrip("/")
    urls = [str(root).rstrip("/") + found[len(base):] for found in _store_dirs(fs, base, depth=0)]
    return [_info_or_reason(url) for url in sorted(urls)]


def _info_or_reason(url: str) -> StoreInfo | UnreadableStore:
    try:
        return store_info(url)
    except UserError as err:
        return UnreadableStore(url, str(err).removeprefix(f"{url}: "))


def _store_dirs(fs, path: str, depth: int):
    """Directories named ``*.zarr`` under ``path``, never descending into one."""
    for entry in fs.ls(path, detail=True):
        name = entry["name"].rstrip("/")
        if entry["type"] != "directory":
            continue
        if name.endswith(STORE_SUFFIX):
            yield name
        elif depth < MAX_DEPTH:
            yield from _store_dirs(fs, name, depth + 1)


def no_store_error(url: str) -> UserError:
    """"No store here", with the closest stores that do exist under the same root."""
    closest = closest_stores(url)
    hint = f"; closest under {closest[0][0]}: {', '.join(name for _, name in closest)}" if closest else ""
    return UserError(f"{url}: no activation store here{hint}")


def closest_stores(url: str, n: int = 3) -> list[tuple[str, str]]:
    """(root, name under the root) of up to ``n`` stores whose names are most like ``url``'s, where
    ``url`` lies in the ``ROOT/<model>/<dataset>/<store>`` layout and ROOT can be listed."""
    import difflib

    parts = str(url).rstrip("/").rsplit("/", 3)
    if len(parts) != 4:
        return []
    root, wanted = parts[0], "/".join(parts[1:])
    try:
        fs, path = fsspec.core.url_to_fs(root)
        base = path.rstrip("/")
        names = [found[len(base) + 1:] for found in _store_dirs(fs, base, depth=0)] if fs.isdir(base) else []
    except Exception:  # noqa: BLE001 - a root we cannot list: no suggestions
        return []
    return [(root, name) for name in difflib.get_close_matches(wanted, names, n=n, cutoff=0.5)]


def size_on_disk(url: str) -> int:
    fs, path = fsspec.core.url_to_fs(str(url))
    return int(fs.du(path, total=True))


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
