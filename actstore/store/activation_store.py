"""Reading (and, during extraction, writing) one activation store, every read checked against the
checksums its blocks were written with (the format: actstore/store/layout.py)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np
import zarr

from common import UserError, describe, format_layers
from actstore.store.disk import DISK_FULL, check_float16_range, disk_full_message
from actstore.store.hints import extract_command
from actstore.store.integrity import LABEL_ARRAYS, MISMATCH, Column, Damage, block_crcs, crc32, metadata_digest, store_salt
from actstore.store.layout import PER_SEQUENCE, STORE_FORMAT, TEXT_ARRAYS, StoreLayout, attrs_checksum, creation_labels


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
        from actstore.store.notebook import sequence_frame

        return sequence_frame(self)

    def xy(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, y, groups) for a probe's or any scikit-learn estimator's ``fit(X, y, groups=groups)``:
        the residual stream at ``layer``, 1.0 for each example's preferred response (else 0.0), and the
        example ids; each example's rows together, its preferred response first."""
        from actstore.store.notebook import store_xy

        return store_xy(self, layer)

    def to_xarray(self, layers=None):
        """Residual activations of ``layers`` (default: all) as an xarray DataArray (sequence, layer, hidden)."""
        from actstore.store.notebook import activation_array

        return activation_array(self, layers)

    # -- integrity ----------------------------------------------------------------------
    def read(self, name: str, row: int | None = None) -> np.ndarray:
        """One array (one row of a layered array) in its stored dtype, every flagged block checked
        against the checksum recorded when it was written; anything else is a UserError."""
        array = self._array(name)
        try:
            values = np.asarray(array[row] if row is not None else array[:])
        except Exception as err:  # noqa: BLE001 - zarr, codecs and the file system each raise their own
            damage = self._check_block_by_block(name, row) or [self._damage(name, row, 0, f"unreadable ({describe(err)})")]
            raise self.damaged_error(damage) from None
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
                except Exception:  # noqa: BLE001 - some chunk will not decode: find each one
                    damage += self._check_block_by_block(name, row)
                    continue
                damage += self._check(name, row, values)
        return damage

    def _check_block_by_block(self, name: str, row: int | None) -> list[Damage]:
        """Every damaged block of one array (one row of a layered one), read one block at a time."""
        layout, array = self.layout, self._array(name)
        expected = self._expected_checksums(name, row)
        flagged = np.ones(layout.n_blocks, dtype=bool) if name in LABEL_ARRAYS else self._flags()
        salt = 0 if name in LABEL_ARRAYS else self._salt
        damage = []
        for block in range(layout.n_blocks):
            start, stop = layout.block_range(block)
            try:
                values = np.asarray(array[(row, slice(start, stop)) if row is not None else slice(start, stop)])
            except Exception as err:  # noqa: BLE001 - zarr, codecs and the file system each raise their own
                damage.append(self._damage(name, row, block, f"chunk unreadable ({describe(err)})"))
                continue
            if flagged[block] and block_crcs(values, layout.block_size, salt)[0] != expected[block]:
                damage.append(self._damage(name, row, block, MISMATCH))
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
            for name, values in creation_labels(per_sequence, self.layout).items():
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
