"""Sealed directories: a directory users keep appears whole or not at all (files: common.write_text_atomic).

A directory (a saved probe, a trained reward model) is built in a temporary sibling whose last
file is ``complete.json``: the sha256 of every other file, plus whatever record the caller adds. It is then renamed into
place in one step (an older directory there is moved aside first and deleted after). Readers
call ``verify_directory``: a directory without the marker, or whose files no longer match it,
is refused with one line, so a killed save or a damaged copy is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from common import UserError, temporary_sibling

MARKER = "complete.json"
MARKER_FORMAT = 1


@contextmanager
def atomic_directory(path: str | os.PathLike, record: dict | None = None) -> Iterator[Path]:
    """Yield an empty staging directory; on success, seal it with the marker and move it to ``path``.

    On an exception the staging directory is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_sibling(path, "staging")
    staging.mkdir()
    try:
        yield staging
        _write_marker(staging, record or {})
        _move_into_place(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_marker(directory: Path, record: dict) -> None:
    files = {name: file_sha256(directory / name) for name in _files(directory)}
    marker = {"format": MARKER_FORMAT, "files": files, **record}
    (directory / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _move_into_place(staging: Path, path: Path) -> None:
    if not path.exists():
        os.replace(staging, path)
        return
    old = temporary_sibling(path, "old")
    os.replace(path, old)
    try:
        os.replace(staging, path)
    except OSError:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a sealed directory (its files are not re-hashed here)."""
    return (Path(path) / MARKER).is_file()


def read_marker(path: str | os.PathLike) -> dict:
    """The marker's record; a directory without a readable marker is a UserError."""
    path = Path(path)
    marker = path / MARKER
    if not marker.is_file():
        raise UserError(f"{path}: incomplete (no {MARKER}: its save was interrupted or it was copied in part); "
                        "delete it and save it again")
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{marker}: damaged completion marker ({err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise UserError(f"{marker}: damaged completion marker (no file list)")
    return record


def verify_directory(path: str | os.PathLike) -> dict:
    """Check every file of a sealed directory against its marker; return the marker's record."""
    path = Path(path)
    record = read_marker(path)
    expected = record["files"]
    present = set(_files(path))
    for name in sorted(set(expected) | present):
        if name not in present:
            raise UserError(f"{path}: {name} is missing (the directory is damaged); delete it and save it again")
        if name not in expected:
            raise UserError(f"{path}: {name} was added after the directory was saved; delete it and save it again")
        if file_sha256(path / name) != expected[name]:
            raise UserError(f"{path}: {name} changed after it was saved (checksum mismatch); "
                            "delete the directory and save it again")
    return record


HASH_CHUNK = 1 << 23  # bytes read at a time while hashing a file


def file_sha256(path: Path) -> str:
    """``sha256:<hex>`` of every byte of ``path``."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            digest.update(view[:read])
    return "sha256:" + digest.hexdigest()


def _files(directory: Path) -> list[str]:
    """Every regular file under ``directory`` except the marker, as POSIX relative paths."""
    names = []
    for root, _, files in os.walk(directory):
        for name in files:
            relative = (Path(root) / name).relative_to(directory).as_posix()
            if relative != MARKER:
                names.append(relative)
    return sorted(names)
