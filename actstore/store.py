"""The activation store: one Zarr v3 group per (model, dataset, split, view).

Layout (all arrays chunked along sequences in blocks of ``block_size``; a layer's chunks are
``(1, block_size, d)``, so one layer for all sequences is ``ceil(n / block_size)`` contiguous
reads and never touches the other layers):

- ``residual``   (n_layers_stored, n_sequences, hidden)  residual stream at the last real token;
  ``meta["layers"][i]`` names row i in the layer convention (0 = embeddings, i+1 = output of
  block i).
- ``final_norm`` (n_sequences, hidden)  the final RMSNorm output at the last real token; present
  only when the extraction ran the full depth (the deepest layer or the ``plain`` view's
  log-likelihood needs it), since extraction stops after the deepest requested layer.
- ``heads``      (n_head_layers, n_sequences, n_heads, head_dim), only with site ``heads``:
  per-head attention outputs (input of ``o_proj``) of block l-1 for layer l in
  ``meta["head_layers"]``.
- per sequence: ``example``, ``response``, ``score``, ``n_tokens``, ``last_token`` and, for the
  ``plain`` view, ``loglik`` (total log-likelihood of response + EOS given the prompt); and the
  texts, ``prompt_text`` and ``response_text``, so a store needs no data directory to be read.
- ``block_done`` (n_blocks,) one flag per block, written after the block's data, so a killed
  run resumes at the first block without a flag and parallel writers never share a chunk.

- ``block_checksums`` (n_blocks, columns) the crc32 of what each block wrote to each array (and
  layer), written with the block before its flag (see actstore/integrity.py); every read checks it.

Sequences are ordered by example, then by response in file order. Attributes hold the model,
tokenizer, view template, layer convention, dtype, dataset fingerprint, software version and
the completion record; ``complete`` is set last, only when every block is done.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import shutil
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from actstore import __version__
from common import UserError, describe, format_layers
from actstore.hints import extract_command
from actstore.integrity import (LABEL_ARRAYS, MISMATCH, Column, Damage, block_crcs, crc32, metadata_digest,
                                 store_salt)

STORE_FORMAT = 2  # 2: chunk and block checksums
LAYER_CONVENTION = "0 = token embeddings; l = output of transformer block l-1 (1-based); final norm stored separately"
FLOAT16_MAX = float(np.finfo(np.float16).max)
PER_SEQUENCE = {"example": "int32", "response": "int32", "score": "float32", "n_tokens": "int32", "last_token": "int32"}
TEXT_ARRAYS = ("prompt_text", "response_text")


@dataclass(frozen=True)
class StoreLayout:
    n_sequences: int
    layers: tuple[int, ...]
    hidden_size: int
    dtype: str = "float16"  # storage dtype: float16 or float32
    block_size: int = 512
    n_heads: int | None = None  # set for site "heads"
    head_dim: int | None = None
    with_loglik: bool = False
    with_final_norm: bool = True
    compressor: str | None = "blosc-zstd"  # or None
    with_texts: bool = False  # prompt_text and response_text per sequence

    @property
    def n_blocks(self) -> int:
        return -(-self.n_sequences // self.block_size)

    @property
    def head_layers(self) -> tuple[int, ...]:
        return tuple(layer for layer in self.layers if layer >= 1) if self.n_heads else ()

    def block_range(self, block: int) -> tuple[int, int]:
        start = block * self.block_size
        return start, min(start + self.block_size, self.n_sequences)

    def block_length(self, block: int) -> int:
        start, stop = self.block_range(block)
        return stop - start

    @property
    def checksum_columns(self) -> tuple[Column, ...]:
        """What ``block_checksums`` holds, column by column: every array a block writes."""
        columns = [Column("residual", row) for row in range(len(self.layers))]
        if self.with_final_norm:
            columns.append(Column("final_norm"))
        columns += [Column("heads", row) for row in range(len(self.head_layers))]
        columns += [Column("n_tokens"), Column("last_token")] + ([Column("loglik")] if self.with_loglik else [])
        return tuple(columns)

    def array_shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """(shape, chunks) of every array of a store with this layout."""
        n, b, d = self.n_sequences, self.block_size, self.hidden_size
        shapes = {"residual": ((len(self.layers), n, d), (1, b, d))}
        if self.with_final_norm:
            shapes["final_norm"] = ((n, d), (b, d))
        if self.n_heads:
            shapes["heads"] = ((len(self.head_layers), n, self.n_heads, self.head_dim), (1, b, self.n_heads, self.head_dim))
        for name in [*PER_SEQUENCE, *(["loglik"] if self.with_loglik else []), *(TEXT_ARRAYS if self.with_texts else [])]:
            shapes[name] = ((n,), (b,))
        shapes["block_done"] = ((self.n_blocks,), (1,))
        shapes["block_checksums"] = ((self.n_blocks, len(self.checksum_columns)), (1, len(self.checksum_columns)))
        return shapes


def _compressors(name: str | None) -> list:
    """The codecs after serialization: the compressor, then a crc32c of each chunk."""
    if name is None or name == "none":
        return [zarr.codecs.Crc32cCodec()]
    if name == "blosc-zstd":
        return [zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"), zarr.codecs.Crc32cCodec()]
    raise UserError(f"unknown compressor {name!r} (choose blosc-zstd or none)")


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


class ActivationStore:
    """Read (and, during extraction, write) one activation store."""

    def __init__(self, url: str, group):
        self.url = str(url)
        self.group = group
        self._cached_checksums: np.ndarray | None = None
        self._cached_flags: np.ndarray | None = None
        self._arrays: dict[str, Any] = {}

    # -- reading ------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])

    @property
    def n_sequences(self) -> int:
        return int(self.meta["n_sequences"])

    def _row(self, layer: int, layers: list[int], what: str) -> int:
        if layer not in layers:
            raise UserError(f"{self.url}: layer {layer} not in this store's {what} (has {format_layers(layers)})")
        return layers.index(layer)

    def activations(self, layer: int) -> np.ndarray:
        """Residual stream at ``layer`` for all sequences, float32 ``(n_sequences, hidden)``."""
        return np.asarray(self.read("residual", self._row(layer, self.layers, "layers")), dtype=np.float32)

    def final_norm(self) -> np.ndarray:
        """Final-norm output at the last real token, float32 ``(n_sequences, hidden)``."""
        if "final_norm" not in self.group:
            raise UserError(f"{self.url}: no final-norm activations (extraction stopped before the last block; "
                            "request the last layer to get them)")
        return np.asarray(self.read("final_norm"), dtype=np.float32)

    def head_activations(self, layer: int) -> np.ndarray:
        """Per-head attention outputs of block ``layer - 1``: float32 ``(n_sequences, heads, head_dim)``."""
        if "heads" not in self.group:
            raise UserError(f"{self.url}: extracted without --site heads; no per-head activations")
        return np.asarray(self.read("heads", self._row(layer, list(self.meta["head_layers"]), "head layers")),
                          dtype=np.float32)

    def sequences(self) -> dict[str, np.ndarray]:
        names = list(PER_SEQUENCE) + (["loglik"] if "loglik" in self.group else [])
        return {name: self.read(name) for name in names}

    def texts(self) -> dict[str, np.ndarray]:
        """The prompt and response text of every sequence, as copied into the store at extraction."""
        if not self.meta.get("with_texts"):
            raise UserError(f"{self.url}: made without texts (by an earlier version); re-extract with --overwrite "
                            "to keep them in the store")
        return {name: self.read(name).astype(object) for name in TEXT_ARRAYS}

    def frame(self):
        """The per-sequence table (labels, token counts, log-likelihoods, texts) as a pandas DataFrame."""
        from actstore.notebook import sequence_frame

        return sequence_frame(self)

    def to_xarray(self, layers=None):
        """Residual activations of ``layers`` (default: all) as an xarray DataArray (sequence, layer, hidden)."""
        from actstore.notebook import activation_array

        return activation_array(self, layers)

    # -- integrity ----------------------------------------------------------------------
    def read(self, name: str, row: int | None = None) -> np.ndarray:
        """One array (one row of a layered array) in its stored dtype, every flagged block checked
        against the checksum recorded when it was written; anything else is a UserError."""
        array = self._array(name)
        try:
            values = np.asarray(array[row] if row is not None else array[:])
        except Exception as err:  # noqa: BLE001 - zarr, codecs and the file system each raise their own
            raise self.damaged_error([self._unreadable_block(name, row, err)]) from None
        damage = self._check(name, row, values)
        if damage:
            raise self.damaged_error(damage)
        return values

    def verify(self) -> list[Damage]:
        """Every damaged block of every array (``actstore info --verify``, ``extract --repair``)."""
        damage = []
        for name in [*self.layout.array_shapes()]:
            if name in ("block_done", "block_checksums"):
                continue
            rows = range(self._array(name).shape[0]) if name in ("residual", "heads") else [None]
            for row in rows:
                try:
                    values = np.asarray(self._array(name)[row] if row is not None else self._array(name)[:])
                except Exception as err:  # noqa: BLE001
                    damage.append(self._unreadable_block(name, row, err))
                    continue
                damage += self._check(name, row, values)
        return damage

    def _check(self, name: str, row: int | None, values: np.ndarray) -> list[Damage]:
        layout = self.layout
        expected = self._expected_checksums(name, row)
        flagged = np.ones(layout.n_blocks, dtype=bool) if name in LABEL_ARRAYS else self._flags()
        damage = []
        salt = 0 if name in LABEL_ARRAYS else self._salt
        for block, (crc, wanted) in enumerate(zip(block_crcs(values, layout.block_size, salt), expected)):
            if flagged[block] and crc != wanted:
                damage.append(self._damage(name, row, block, MISMATCH))
        return damage

    @property
    def _salt(self) -> int:
        return store_salt(self.meta.get("store_id"))

    def _expected_checksums(self, name: str, row: int | None) -> list[int]:
        if name in LABEL_ARRAYS:
            return list(self.meta["label_checksums"][name])
        keys = [column.key for column in self.layout.checksum_columns]
        column = keys.index(Column(name, row).key)
        table = self._checksum_table()
        return [int(value) for value in table[:, column]]

    def _checksum_table(self) -> np.ndarray:
        if self._cached_checksums is not None:
            return self._cached_checksums
        table = self._read_per_block("block_checksums", fill=0)
        if self.meta.get("complete"):
            self._cached_checksums = table
        return table

    def _read_per_block(self, name: str, fill: int) -> np.ndarray:
        """A small bookkeeping array; a block whose chunk cannot be read reads as ``fill`` (so its
        checksums mismatch or its flag is down: the block is treated as not written, never as data)."""
        array = self._array(name)
        try:
            return np.asarray(array[:])
        except Exception:  # noqa: BLE001
            values = np.full(array.shape, fill, dtype=array.dtype)
            for block in range(array.shape[0]):
                try:
                    values[block] = array[block]
                except Exception:  # noqa: BLE001
                    pass
            return values

    def _flags(self) -> np.ndarray:
        if self.meta.get("complete"):
            if self._cached_flags is None:
                self._cached_flags = self.blocks_done()
            return self._cached_flags
        return self.blocks_done()

    def _unreadable_block(self, name: str, row: int | None, err: Exception) -> Damage:
        """The first block of ``name`` (row ``row``) that fails to read, for the message."""
        array = self._array(name)
        for block in range(self.layout.n_blocks):
            start, stop = self.layout.block_range(block)
            try:
                array[(row, slice(start, stop)) if row is not None else slice(start, stop)]
            except Exception as block_err:  # noqa: BLE001
                return self._damage(name, row, block, f"chunk unreadable ({describe(block_err)})")
        return self._damage(name, row, 0, f"unreadable ({describe(err)})")

    def _damage(self, name: str, row: int | None, block: int, reason: str) -> Damage:
        start, stop = self.layout.block_range(block)
        layers = {"residual": self.meta["layers"], "heads": self.meta.get("head_layers") or []}.get(name)
        layer = layers[row] if layers is not None and row is not None else None
        return Damage(name, block, start, stop - 1, reason, layer)

    def damaged_error(self, damage: list[Damage]) -> UserError:
        if self._replaced():
            return UserError(f"{self.url}: the store was replaced while it was read (another process re-extracted it "
                             "with --overwrite?); run the command again once that extraction is done")
        more = f" (and {len(damage) - 1} more damaged blocks)" if len(damage) > 1 else ""
        return UserError(f"{self.url}: {damage[0]}{more}; repair with: {self.repair_command()}")

    def _replaced(self) -> bool:
        """Whether the store's metadata on disk is no longer the one this reader opened."""
        try:
            return dict(zarr.open_group(store=self.group.store, mode="r").attrs) != self.meta
        except Exception:  # noqa: BLE001 - gone, or half re-created
            return True

    def repair_command(self) -> str:
        root = self.url.rstrip("/").rsplit("/", 3)[0]
        return extract_command(self.meta, [self.meta.get("view", "plain")], root=root, repair=True)

    def _array(self, name: str):
        """The array ``name``, its metadata read once: a store replaced under a reader keeps the
        reader's shapes, so new chunks are checked against the old checksums (and refused)."""
        if name in self._arrays:
            return self._arrays[name]
        try:
            self._arrays[name] = self.group[name]
            return self._arrays[name]
        except Exception as err:  # noqa: BLE001 - a missing or damaged array zarr.json
            if isinstance(err, FileNotFoundError):
                raise UserError(f"{self.url}: the store changed while it was read (array {name} disappeared; "
                                "another process is overwriting it?); try again when it is done") from None
            raise UserError(f"{self.url}: array {name} is missing or its metadata is damaged ({describe(err)}); "
                            "re-extract the store with the same command and --overwrite") from None

    def check_consistent(self) -> None:
        """Metadata, array shapes and flags agree; a UserError names the first thing that does not."""
        meta = self.meta
        if meta.get("format") != STORE_FORMAT:
            raise UserError(f"{self.url}: store format {meta.get('format')!r} (this toolkit reads format {STORE_FORMAT}, "
                            "which checksums every block); re-extract it with the same command and --overwrite")
        if meta.get("attrs_checksum") != attrs_checksum(meta):
            raise UserError(f"{self.url}: the store's attributes changed since it was extracted (zarr.json edited or "
                            "damaged); re-extract it with the same command and --overwrite")
        try:
            layout = self.layout
            shapes = layout.array_shapes()
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{self.url}: damaged store attributes (zarr.json: {describe(err)}); "
                            "re-extract it with the same command and --overwrite") from None
        sealed = meta.get("array_metadata") or {}  # stores made before it was recorded: shapes only
        for name, (shape, chunks) in shapes.items():
            array = self._array(name)
            if tuple(array.shape) != shape or tuple(array.chunks) != chunks:
                raise UserError(f"{self.url}: array {name} has shape {tuple(array.shape)} and chunks {tuple(array.chunks)}, "
                                f"but the store's attributes say {shape} and {chunks} (damaged zarr.json); "
                                "re-extract it with the same command and --overwrite")
            if sealed and sealed.get(name) != metadata_digest(array.metadata.to_dict()):
                raise UserError(f"{self.url}: array {name}'s metadata (zarr.json: dtype, codecs, fill value...) is not "
                                "what the store was made with (edited, or moved in from another store); "
                                "re-extract it with the same command and --overwrite")
        if meta.get("complete"):
            done = self._flags()
            self._checksum_table()  # pinned now, like the array shapes
            if not done.all():
                missing = np.flatnonzero(~done)
                raise UserError(f"{self.url}: inconsistent store: marked complete, but block {int(missing[0])} "
                                f"({len(missing)} in all) is not flagged as written; repair with: {self.repair_command()}")

    # -- writing ------------------------------------------------------------------------
    def blocks_done(self) -> np.ndarray:
        return self._read_per_block("block_done", fill=0).astype(bool)

    def unflag(self, blocks: list[int]) -> None:
        """Mark ``blocks`` as not written (and the store incomplete), so extraction computes them again."""
        self.group.attrs["complete"] = False
        for block in blocks:
            self.group["block_done"][block] = 0
        self._cached_checksums = self._cached_flags = None

    def repair(self, per_sequence: dict[str, np.ndarray]) -> list[Damage]:
        """Unflag every damaged block (and a store marked complete with blocks unflagged), and
        rewrite damaged labels from ``per_sequence`` (the same data, by the caller's identity check)."""
        damage = self.verify()
        if any(d.array in LABEL_ARRAYS for d in damage):
            for name, values in _labels(per_sequence, self.layout).items():
                self.group[name][:] = values
        blocks = sorted({d.block for d in damage if d.array not in LABEL_ARRAYS})
        if blocks or (self.meta.get("complete") and not self.blocks_done().all()):
            self.unflag(blocks)
        return damage

    def write_block(self, block: int, *, residual: np.ndarray, n_tokens: np.ndarray, last_token: np.ndarray,
                    final_norm: np.ndarray | None = None, heads: np.ndarray | None = None,
                    loglik: np.ndarray | None = None) -> None:
        """Write one chunk-aligned block of sequences, then flag it done.

        A float16 store checks every value first, so a refused block leaves nothing behind.
        """
        layout = self.layout
        start, stop = layout.block_range(block)
        if layout.with_final_norm and final_norm is None:
            raise ValueError(f"{self.url}: this store keeps the final norm; block {block} came without it")
        if layout.dtype == "float16":
            # (array, axis along sequences): the error names the sequence and, where there is one, the layer.
            for name, values, axis in (("residual", residual, 1), ("final_norm", final_norm, 0), ("heads", heads, 1)):
                if values is not None:
                    check_float16_range(values, name, self.url, start, sequence_axis=axis,
                                        layers=layout.layers if name == "residual" else layout.head_layers)
        try:
            self._write_and_checksum(layout, block, start, stop, residual=residual, final_norm=final_norm, heads=heads,
                                     n_tokens=n_tokens, last_token=last_token, loglik=loglik)
            self.group["block_done"][block] = 1
        except OSError as err:
            if err.errno in DISK_FULL:
                raise UserError(self._disk_full_message(block)) from None
            raise

    def _write_and_checksum(self, layout: StoreLayout, block: int, start: int, stop: int, **written) -> None:
        stored = {name: np.asarray(values, dtype=self.group[name].dtype) for name, values in written.items()
                  if values is not None and (name != "final_norm" or layout.with_final_norm)}
        for name, values in stored.items():
            self.group[name][(slice(None), slice(start, stop)) if name in ("residual", "heads") else slice(start, stop)] = values
        self.group["block_checksums"][block] = [
            crc32(stored[c.array][c.row] if c.row is not None else stored[c.array], self._salt)
            for c in layout.checksum_columns]

    def _disk_full_message(self, block: int) -> str:
        layout = self.layout
        left = int((~self.blocks_done()).sum())
        per_sequence = (len(layout.layers) + layout.with_final_norm) * layout.hidden_size * np.dtype(layout.dtype).itemsize
        per_sequence += len(layout.head_layers) * (layout.n_heads or 0) * (layout.head_dim or 0) * np.dtype(layout.dtype).itemsize
        needed = per_sequence * layout.block_size * left
        return disk_full_message(self.url, f"while writing block {block}", needed, left)

    @property
    def layout(self) -> StoreLayout:
        m = self.meta
        return StoreLayout(
            n_sequences=m["n_sequences"], layers=tuple(m["layers"]), hidden_size=m["hidden_size"], dtype=m["dtype"],
            block_size=m["block_size"], n_heads=m.get("n_heads"), head_dim=m.get("head_dim"),
            with_loglik=m.get("with_loglik", False), with_final_norm=m.get("with_final_norm", True),
            compressor=m.get("compressor"), with_texts=m.get("with_texts", False),
        )

    def mark_complete(self, **record: Any) -> None:
        done = self.blocks_done()
        if not done.all():
            raise RuntimeError(f"{self.url}: {int((~done).sum())} blocks not written; cannot mark complete")
        self.group.attrs.update({
            "complete": True,
            "completion": {"finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **record},
        })


def create_store(url: str, layout: StoreLayout, per_sequence: dict[str, np.ndarray], attrs: dict[str, Any]) -> ActivationStore:
    """Create an empty store (overwriting whatever is at ``url``) with its per-sequence labels.

    The group is marked ``creating`` until its arrays and attributes are all written, so a store
    whose creation was killed is recognised (and re-created) rather than taken for a foreign one.
    """
    group = zarr.open_group(store=str(url), mode="w", attributes={"format": STORE_FORMAT, "creating": True,
                                                                  "complete": False})
    n, b = layout.n_sequences, layout.block_size
    dtype = np.dtype(layout.dtype)
    compressors = _compressors(layout.compressor)
    group.create_array("residual", shape=(len(layout.layers), n, layout.hidden_size), chunks=(1, b, layout.hidden_size),
                       dtype=dtype, fill_value=0, compressors=compressors)
    if layout.with_final_norm:
        group.create_array("final_norm", shape=(n, layout.hidden_size), chunks=(b, layout.hidden_size), dtype=dtype,
                           fill_value=0, compressors=compressors)
    if layout.n_heads:
        group.create_array("heads", shape=(len(layout.head_layers), n, layout.n_heads, layout.head_dim),
                           chunks=(1, b, layout.n_heads, layout.head_dim), dtype=dtype, fill_value=0, compressors=compressors)
    for name, kind in PER_SEQUENCE.items():
        group.create_array(name, shape=(n,), chunks=(b,), dtype=kind, fill_value=0, compressors=compressors)
    if layout.with_loglik:
        group.create_array("loglik", shape=(n,), chunks=(b,), dtype="float64", fill_value=np.nan, compressors=compressors)
    group.create_array("block_done", shape=(layout.n_blocks,), chunks=(1,), dtype="uint8", fill_value=0, compressors=None)
    columns = layout.checksum_columns
    group.create_array("block_checksums", shape=(layout.n_blocks, len(columns)), chunks=(1, len(columns)), dtype="uint32",
                       fill_value=0, compressors=_compressors(None))
    if layout.with_texts:
        for name in TEXT_ARRAYS:
            group.create_array(name, shape=(n,), chunks=(b,), dtype=str, compressors=compressors)
    labels = _labels(per_sequence, layout)
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


def _labels(per_sequence: dict[str, np.ndarray], layout: StoreLayout) -> dict[str, np.ndarray]:
    """What is written at creation: the labels, and the texts where the layout keeps them."""
    labels = {name: np.asarray(per_sequence[name], dtype=PER_SEQUENCE[name]) for name in ("example", "response", "score")}
    if layout.with_texts:
        labels.update({name: np.asarray(per_sequence[name], dtype=object) for name in TEXT_ARRAYS})
    return labels


MUTABLE_ATTRS = ("complete", "completion", "creating", "attrs_checksum")


def attrs_checksum(attrs: dict) -> str:
    """sha256 of every attribute written at creation (not the completion record, set later)."""
    import hashlib
    import json

    fixed = {key: value for key, value in attrs.items() if key not in MUTABLE_ATTRS}
    return "sha256:" + hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()


def open_store(url: str, *, require_complete: bool = True) -> ActivationStore:
    """Open a store for reading. An incomplete store is refused unless ``require_complete=False``."""
    try:
        group = _open_group(url, "r")
    except NoStoreHere:
        from actstore.info import no_store_error

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


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(url: str, when: str = "", needed: int | None = None, blocks_left: int | None = None) -> str:
    from actstore.info import human_bytes

    free = _free_bytes(url)
    message = f"{url}: disk full{' ' + when if when else ''}"
    if free is not None:
        message += f" ({human_bytes(free)} free)"
    if needed is not None:
        message += f"; the {blocks_left} blocks still to write need up to {human_bytes(needed)} (uncompressed)"
    return message + "; free some space and re-run the same command to resume (the blocks written so far are kept)"


def _free_bytes(url: str) -> int | None:
    if "://" in str(url):
        return None
    path = os.path.expanduser(str(url))
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path or ".").free


def _holds_files(url: str) -> bool:
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(url))
    try:
        return bool(fs.isdir(path) and fs.ls(path)) or fs.isfile(path)
    except (FileNotFoundError, NotADirectoryError):
        return False


def check_float16_range(values: np.ndarray, name: str, url: str, first_sequence: int, *, sequence_axis: int = 0,
                        layers: tuple[int, ...] | None = None) -> None:
    """Refuse values that float16 would turn into infinities (or that are already not finite)."""
    bad = ~np.isfinite(values) | (np.abs(values) > FLOAT16_MAX)
    if bad.any():
        where = tuple(np.argwhere(bad)[0])
        sequence = first_sequence + int(where[sequence_axis])
        layer = f" layer {layers[where[0]]}," if layers and sequence_axis == 1 else ""
        raise UserError(
            f"{url}: {name}{layer} sequence {sequence}: value {float(values[where]):.4g} is outside the float16 "
            f"range (max {FLOAT16_MAX:.0f}); re-run with --dtype float32 --overwrite"
        )
