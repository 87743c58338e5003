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
  ``plain`` view, ``loglik`` (total log-likelihood of response + EOS given the prompt).
- ``block_done`` (n_blocks,) one flag per block, written after the block's data, so a killed
  run resumes at the first block without a flag and parallel writers never share a chunk.

Sequences are ordered by example, then by response in file order. Attributes hold the model,
tokenizer, view template, layer convention, dtype, dataset fingerprint, software version and
the completion record; ``complete`` is set last, only when every block is done.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from actstore import __version__
from actstore.errors import UserError

STORE_FORMAT = 1
LAYER_CONVENTION = "0 = token embeddings; l = output of transformer block l-1 (1-based); final norm stored separately"
FLOAT16_MAX = float(np.finfo(np.float16).max)
PER_SEQUENCE = {"example": "int32", "response": "int32", "score": "float32", "n_tokens": "int32", "last_token": "int32"}


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


def _compressors(name: str | None):
    if name is None or name == "none":
        return None
    if name == "blosc-zstd":
        return zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")
    raise UserError(f"unknown compressor {name!r} (choose blosc-zstd or none)")


def _open_group(url: str, mode: str):
    if "://" not in str(url):
        url = os.path.expanduser(str(url))
    try:
        return zarr.open_group(store=str(url), mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        raise UserError(f"{url}: no activation store here") from None


class ActivationStore:
    """Read (and, during extraction, write) one activation store."""

    def __init__(self, url: str, group):
        self.url = str(url)
        self.group = group

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
            raise UserError(f"{self.url}: layer {layer} not in this store's {what} (has {_span(layers)})")
        return layers.index(layer)

    def activations(self, layer: int) -> np.ndarray:
        """Residual stream at ``layer`` for all sequences, float32 ``(n_sequences, hidden)``."""
        return np.asarray(self.group["residual"][self._row(layer, self.layers, "layers")], dtype=np.float32)

    def final_norm(self) -> np.ndarray:
        """Final-norm output at the last real token, float32 ``(n_sequences, hidden)``."""
        if "final_norm" not in self.group:
            raise UserError(f"{self.url}: no final-norm activations (extraction stopped before the last block; "
                            "request the last layer to get them)")
        return np.asarray(self.group["final_norm"][:], dtype=np.float32)

    def head_activations(self, layer: int) -> np.ndarray:
        """Per-head attention outputs of block ``layer - 1``: float32 ``(n_sequences, heads, head_dim)``."""
        if "heads" not in self.group:
            raise UserError(f"{self.url}: extracted without --site heads; no per-head activations")
        return np.asarray(self.group["heads"][self._row(layer, list(self.meta["head_layers"]), "head layers")], dtype=np.float32)

    def sequences(self) -> dict[str, np.ndarray]:
        names = list(PER_SEQUENCE) + (["loglik"] if "loglik" in self.group else [])
        return {name: np.asarray(self.group[name][:]) for name in names}

    # -- writing ------------------------------------------------------------------------
    def blocks_done(self) -> np.ndarray:
        return np.asarray(self.group["block_done"][:], dtype=bool)

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
        self.group["residual"][:, start:stop] = residual
        if final_norm is not None and layout.with_final_norm:
            self.group["final_norm"][start:stop] = final_norm
        if heads is not None:
            self.group["heads"][:, start:stop] = heads
        self.group["n_tokens"][start:stop] = n_tokens
        self.group["last_token"][start:stop] = last_token
        if loglik is not None:
            self.group["loglik"][start:stop] = loglik
        self.group["block_done"][block] = 1

    @property
    def layout(self) -> StoreLayout:
        m = self.meta
        return StoreLayout(
            n_sequences=m["n_sequences"], layers=tuple(m["layers"]), hidden_size=m["hidden_size"], dtype=m["dtype"],
            block_size=m["block_size"], n_heads=m.get("n_heads"), head_dim=m.get("head_dim"),
            with_loglik=m.get("with_loglik", False), with_final_norm=m.get("with_final_norm", True),
            compressor=m.get("compressor"),
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
        group.create_array(name, shape=(n,), chunks=(b,), dtype=kind, fill_value=0)
    if layout.with_loglik:
        group.create_array("loglik", shape=(n,), chunks=(b,), dtype="float64", fill_value=np.nan)
    group.create_array("block_done", shape=(layout.n_blocks,), chunks=(1,), dtype="uint8", fill_value=0, compressors=None)
    for name in ("example", "response", "score"):
        group[name][:] = per_sequence[name]
    group.attrs.update({
        **attrs,
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
        "n_sequences": n,
        "n_examples": int(len(np.unique(per_sequence["example"]))),
        "complete": False,
        "creating": False,
    })
    return ActivationStore(url, group)


def open_store(url: str, *, require_complete: bool = True) -> ActivationStore:
    """Open a store for reading. An incomplete store is refused unless ``require_complete=False``."""
    group = _open_group(url, "r")
    if "format" not in group.attrs:
        raise UserError(f"{url}: not an activation store (no format attribute)")
    store = ActivationStore(url, group)
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
        group = zarr.open_group(store=str(url), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        if _holds_files(url):  # creating a store there would delete them
            raise UserError(f"{url}: exists but is not an activation store (no zarr.json)") from None
        return None
    if "format" not in group.attrs:
        raise UserError(f"{url}: exists but is not an activation store (no format attribute)")
    return ActivationStore(url, group)


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


def _span(values: list[int]) -> str:
    if not values:
        return "none"
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ",".join(map(str, values))
