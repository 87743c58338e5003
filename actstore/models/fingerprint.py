"""A model's identity by its content: what a store, a run or a reward model records beside the model's name."""

from __future__ import annotations

import functools
from pathlib import Path

from common.model_names import model_aliases


FINGERPRINT_HEAD = 1 << 16  # bytes read from the start of each file (a safetensors header, a GGUF's metadata)
FINGERPRINT_SAMPLES = 16  # and this many pieces of FINGERPRINT_PIECE bytes spread over the rest
FINGERPRINT_PIECE = 1 << 12


def model_fingerprint(name: str) -> str | None:
    """The identity of a model's content: for a hub id the revision its local cache resolves to now
    (None for an alias, or a name not in the cache); for a local model every file of the directory
    (or the one .gguf file) by name and size, its first 64 KiB and 16 pieces spread over it. Cheap (a
    few hundred kB read per file, and read again only when a file's size or modification time
    changed) and independent of paths and modification times, so the same checkpoint copied elsewhere
    keeps its stores, while weights replaced in place, or another checkpoint reached by the same
    path, do not reuse them."""
    path = Path(name).expanduser()
    if name in model_aliases():
        return None
    if not path.exists():
        return _hub_revision(name)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts)
    listing = tuple((str(file.relative_to(path) if path.is_dir() else file.name), file.stat().st_size,
                     file.stat().st_mtime_ns, str(file)) for file in files)
    return _content_digest(listing)


@functools.lru_cache(maxsize=64)
def _content_digest(listing: tuple[tuple[str, int, int, str], ...]) -> str:
    """The digest of the files in ``listing`` ((name, size, mtime, path) each); cached per listing, so
    one run reads a large checkpoint's samples once, and again only after a file changed."""
    import hashlib

    digest = hashlib.sha256()
    for name, size, _, location in listing:
        digest.update(f"{name}\0{size}\0".encode())
        with open(location, "rb") as handle:
            digest.update(handle.read(FINGERPRINT_HEAD))
            for k in range(FINGERPRINT_SAMPLES):
                handle.seek(size * (k + 1) // (FINGERPRINT_SAMPLES + 1))
                digest.update(handle.read(FINGERPRINT_PIECE))
    return digest.hexdigest()[:20]


def _hub_revision(name: str) -> str | None:
    """``revision:<commit>`` that the local Hugging Face cache resolves ``name`` to (what a load would
    read), without loading it; None when the name is not cached as a model."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a repository id
        return None
    return f"revision:{Path(found).parent.name}" if isinstance(found, str) else None
