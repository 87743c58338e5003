"""A model's identity by its content: what a store, a run or a reward model records beside the model's name.

A local model's fingerprint hashes every byte of every file. Each file's sha256 is kept in a small
per-user cache beside what says whether the file may have changed since (its size, modification time,
inode and change time: the change time moves with every write and cannot be set back by hand), so a
checkpoint is read in full once, and again only after a write touches it. A copy elsewhere is another
file: it is read once, and its fingerprint is the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from common import user_cache_dir, write_text_atomic
from common.atomic import file_sha256
from common.model_names import model_aliases

DIGEST_CACHE = "file-digests.json"  # under the per-user cache: {path: {"stat": [...], "sha256": ...}}


def model_fingerprint(name: str) -> str | None:
    """The identity of a model's content: for a hub id the revision its local cache resolves to now
    (None for an alias, or a name not in the cache); for a local model the sha256 of every file of the
    directory (or the one .gguf file) with its name. Independent of paths and modification times, so
    the same checkpoint copied elsewhere keeps its stores, while any byte changed in place, or another
    checkpoint reached by the same path, does not reuse them."""
    path = Path(name).expanduser()
    if name in model_aliases():
        return None
    if not path.exists():
        return _hub_revision(name)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts)
    digests = FileDigests.load()
    combined = hashlib.sha256()
    for file in files:
        relative = file.relative_to(path) if path.is_dir() else Path(file.name)
        combined.update(f"{relative.as_posix()}\0{digests.sha256(file)}\0".encode())
    digests.save()
    return combined.hexdigest()[:20]


def file_state(path: Path) -> list[int]:
    """What changes whenever a file's bytes may have: size, modification and change times, inode, device."""
    found = os.stat(path)
    return [found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino, found.st_dev]


class FileDigests:
    """Files' sha256 digests, each valid while its ``file_state`` is unchanged."""

    def __init__(self, location: Path, entries: dict):
        self.location, self.entries, self.changed = location, entries, False

    @classmethod
    def load(cls) -> "FileDigests":
        location = user_cache_dir() / DIGEST_CACHE
        try:
            entries = json.loads(location.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet, or unreadable: every file is hashed again
            entries = {}
        return cls(location, entries if isinstance(entries, dict) else {})

    def sha256(self, file: Path) -> str:
        key = str(Path(file).absolute())
        state = file_state(file)
        entry = self.entries.get(key)
        if isinstance(entry, dict) and entry.get("stat") == state and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
        digest = file_sha256(file)
        if file_state(file) == state:  # not written to while it was read
            self.entries[key] = {"stat": state, "sha256": digest}
            self.changed = True
        return digest

    def save(self) -> None:
        """Keep the digests (those of files gone since are dropped); a cache that cannot be written is skipped."""
        if not self.changed:
            return
        kept = {key: entry for key, entry in self.entries.items() if os.path.exists(key)}
        try:
            self.location.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.location, json.dumps(kept))
        except OSError:
            pass


def _hub_revision(name: str) -> str | None:
    """``revision:<commit>`` that the local Hugging Face cache resolves ``name`` to (what a load would
    read), without loading it; None when the name is not cached as a model."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a repository id
        return None
    return f"revision:{Path(found).parent.name}" if isinstance(found, str) else None
