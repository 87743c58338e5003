"""Creating and opening stores: a new store with its labels, an existing one for reading or writing,
and whatever lies at a URL told apart from a store."""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np
import zarr

from actstore import __version__
from common import UserError, describe
from actstore.store.activation_store import ActivationStore
from actstore.store.locations import StoreName
from actstore.store.integrity import block_crcs, metadata_digest
from actstore.store.layout import (LAYER_CONVENTION, PER_SEQUENCE, STORE_FORMAT, TEXT_ARRAYS, StoreLayout, attrs_checksum,
                                   compressors, creation_labels)


class NoStoreHere(UserError):
    """Nothing at the URL (as opposed to something damaged there)."""


def _open_group(url: str, mode: str):
    if "://" not in str(url):
        url = os.path.expanduser(str(url))
    try:
        return zarr.open_group(store=str(url), mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        raise NoStoreHere(f"{url}: no activation store here") from None
    except ValueError as err:  # a zarr.json that is not valid JSON or not zarr metadata
        raise UserError(f"{url}: damaged store metadata (zarr.json: {describe(err)}); "
                        "re-extract it with the same command and --overwrite") from None


def create_store(url: str, layout: StoreLayout, per_sequence: dict[str, np.ndarray], attrs: dict[str, Any]) -> ActivationStore:
    """Create an empty store (overwriting whatever is at ``url``) with its per-sequence labels.

    The group is marked ``creating`` until its arrays and attributes are all written, so a store
    whose creation was killed is recognised (and re-created) rather than taken for a foreign one.
    """
    group = zarr.open_group(store=str(url), mode="w", attributes={"format": STORE_FORMAT, "creating": True,
                                                                  "complete": False})
    n, b = layout.n_sequences, layout.block_size
    dtype = np.dtype(layout.dtype)
    codecs = compressors(layout.compressor)
    group.create_array("residual", shape=(len(layout.layers), n, layout.hidden_size), chunks=(1, b, layout.hidden_size),
                       dtype=dtype, fill_value=0, compressors=codecs)
    if layout.with_final_norm:
        group.create_array("final_norm", shape=(n, layout.hidden_size), chunks=(b, layout.hidden_size), dtype=dtype,
                           fill_value=0, compressors=codecs)
    if layout.n_heads:
        group.create_array("heads", shape=(len(layout.head_layers), n, layout.n_heads, layout.head_dim),
                           chunks=(1, b, layout.n_heads, layout.head_dim), dtype=dtype, fill_value=0, compressors=codecs)
    for name, kind in PER_SEQUENCE.items():
        group.create_array(name, shape=(n,), chunks=(b,), dtype=kind, fill_value=0, compressors=codecs)
    if layout.with_loglik:
        group.create_array("loglik", shape=(n,), chunks=(b,), dtype="float64", fill_value=np.nan, compressors=codecs)
    group.create_array("block_done", shape=(layout.n_blocks,), chunks=(1,), dtype="uint8", fill_value=0, compressors=None)
    columns = layout.checksum_columns
    group.create_array("block_checksums", shape=(layout.n_blocks, len(columns)), chunks=(1, len(columns)), dtype="uint32",
                       fill_value=0, compressors=compressors(None))
    if layout.with_texts:
        for name in TEXT_ARRAYS:
            group.create_array(name, shape=(n,), chunks=(b,), dtype=str, compressors=codecs)
    labels = creation_labels(per_sequence, layout)
    for name, values in labels.items():
        group[name][:] = values
    group.attrs.update({
        **attrs,
        "store_id": uuid.uuid4().hex,
        "array_metadata": {name: metadata_digest(group[name].metadata.to_dict()) for name in layout.array_shapes()},
        "format": STORE_FORMAT,
        "software_version": __version__,
        "layer_convention": LAYER_CONVENTION,
        "layers": list(layout.layers),
        "head_layers": list(layout.head_layers),
        "hidden_size": layout.hidden_size,
        "n_heads": layout.n_heads,
        "head_dim": layout.head_dim,
        "dtype": layout.dtype,
        "block_size": layout.block_size,
        "compressor": layout.compressor,
        "with_loglik": layout.with_loglik,
        "with_final_norm": layout.with_final_norm,
        "with_texts": layout.with_texts,
        "checksum_columns": [column.key for column in columns],
        "label_checksums": {name: block_crcs(values, b) for name, values in labels.items()},
        "n_sequences": n,
        "n_examples": int(len(np.unique(per_sequence["example"]))),
        "complete": False,
        "creating": False,
    })
    group.attrs["attrs_checksum"] = attrs_checksum(dict(group.attrs))
    return ActivationStore(url, group)


def open_store(url: str, *, require_complete: bool = True) -> ActivationStore:
    """Open a store for reading. An incomplete store is refused unless ``require_complete=False``."""
    try:
        group = _open_group(url, "r")
    except NoStoreHere:
        from actstore.store.info import no_store_error

        raise no_store_error(url) from None
    if "format" not in group.attrs:
        raise UserError(f"{url}: not an activation store (no format attribute)")
    store = ActivationStore(url, group)
    if not store.meta.get("creating"):
        store.check_consistent()
    if require_complete and store.meta.get("creating"):
        raise UserError(f"{url}: incomplete store (its creation was interrupted); "
                        "re-run the same `actstore extract` command to finish it")
    if require_complete and not store.meta.get("complete"):
        done = store.blocks_done()
        raise UserError(f"{url}: incomplete store ({int(done.sum())}/{len(done)} blocks written); "
                        "re-run the same `actstore extract` command to finish it")
    return store


def check_named(url: str, name: StoreName | None, asked: str) -> None:
    """The store at ``url`` (if any) holds what ``name`` says (None: nothing to check); ``asked``: how the user named it."""
    store = find_store(url) if name is not None else None
    if store is not None:
        name.check(store.meta, url, asked)


def open_for_writing(url: str) -> ActivationStore:
    return ActivationStore(url, _open_group(url, "r+"))


def find_store(url: str) -> ActivationStore | None:
    """The store at ``url`` in any state (complete or not), or None when nothing is there.

    Something at ``url`` that is not an activation store is a UserError, so that extraction
    never overwrites an unrelated directory without ``--overwrite``.
    """
    try:
        group = _open_group(url, "r")
    except UserError:
        if not _holds_files(url):
            return None
        if _is_file(url, "zarr.json"):  # damaged metadata: _open_group's message says how to replace it
            raise
        raise UserError(f"{url}: exists but is not an activation store (no zarr.json)") from None
    if "format" not in group.attrs:
        raise UserError(f"{url}: exists but is not an activation store (no format attribute)")
    if group.attrs["format"] != STORE_FORMAT:
        raise UserError(f"{url}: store format {group.attrs['format']!r} (this toolkit reads format {STORE_FORMAT}, "
                        "which checksums every block); re-extract it with the same command and --overwrite")
    return ActivationStore(url, group)


def _is_file(url: str, name: str) -> bool:
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(url))
    return bool(fs.isfile(path.rstrip("/") + "/" + name))


def _holds_files(url: str) -> bool:
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(url))
    try:
        return bool(fs.isdir(path) and fs.ls(path)) or fs.isfile(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
