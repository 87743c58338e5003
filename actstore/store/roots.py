"""Store roots and store URLs from the command line, checked before any work: one line each.

A location is a local path, a ``file://`` URL (used as the local path it names) or an fsspec URL
(``s3://bucket/path``, ``memory://name`` ...). Checked: it is not empty, fsspec knows its
scheme, the scheme's backend is installed (else the pip command that installs it) and the
place can be reached; a root that stores will be written under must also take a write.
"""

from __future__ import annotations

import uuid

import fsspec

from common import UserError, check_writable_dir, default_store_root, describe

FILE_SCHEME = "file://"
WRITE_CHECK_PREFIX = ".genies-write-check-"


def checked_store_root(value: str | None, option: str, *, writing: bool) -> str:
    """The root named by ``option`` (None: the per-user default), ready to use; ``writing``: stores
    will be created under it, so it must be creatable (local) or take a write (remote)."""
    if value is None:
        return str(default_store_root())
    root = checked_location(value, option)
    if writing:
        if "://" in root:
            _check_remote_write(root)
        else:
            _check_local_write(root)
    return root


def checked_location(value: str, what: str) -> str:
    """A store root or store URL that can be opened: ``file://`` turned into its path, an unknown
    scheme, a missing backend or an unreachable host refused."""
    text = str(value).strip()
    if not text:
        raise UserError(f"{what} is empty: give a directory or a URL such as s3://bucket/path "
                        f"(omit {what} for the default, {default_store_root()})")
    if text.startswith(FILE_SCHEME):
        return text[len(FILE_SCHEME):] or "/"
    if "://" not in text:
        return text
    protocol = text.split("://", 1)[0]
    if protocol not in fsspec.available_protocols():
        raise UserError(f"{text}: unknown storage scheme '{protocol}://' (use a local directory or an fsspec URL: "
                        "s3://, gs://, az://, memory:// ...)")
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as err:
        package = getattr(err.__cause__, "name", None) or str(err)
        raise UserError(f"{text}: '{protocol}://' needs the fsspec backend {package}, which is not installed: "
                        f"run `pip install {package}`") from None
    try:
        fs, path = fsspec.core.url_to_fs(text)
        fs.isdir(path)  # False where nothing is there yet: that is for the command to say
    except Exception as err:  # each backend raises its own errors for a host it cannot reach
        raise UserError(f"{text}: cannot reach this storage ({describe(err)})") from None
    return text


def _check_local_write(root: str) -> None:
    """The root exists and takes a new directory, or its nearest existing parent does (nothing is left behind)."""
    check_writable_dir(root, "the store root")


def _check_remote_write(root: str) -> None:
    """Write and delete one empty object under the root: a missing bucket or no permission shows here."""
    fs, path = fsspec.core.url_to_fs(root)
    probe = f"{path.rstrip('/')}/{WRITE_CHECK_PREFIX}{uuid.uuid4().hex}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as err:  # each backend raises its own errors (NoSuchBucket, PermissionError, ...)
        raise UserError(f"{root}: cannot write stores there ({describe(err)})") from None
