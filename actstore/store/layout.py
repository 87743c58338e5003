"""The store's format: one Zarr v3 group per (model, dataset, split, view), its arrays and attributes.

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
  layer), written with the block before its flag (see actstore/store/integrity.py); every read checks it.

Sequences are ordered by example, then by response in file order. Attributes hold the model,
tokenizer, view template, layer convention, dtype, dataset fingerprint, software version and
the completion record; ``complete`` is set last, only when every block is done.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from common import UserError
from actstore.store.integrity import Column

STORE_FORMAT = 2  # 2: chunk and block checksums
LAYER_CONVENTION = "0 = token embeddings; l = output of transformer block l-1 (1-based); final norm stored separately"
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


def compressors(name: str | None) -> list:
    """The codecs after serialization: the compressor, then a crc32c of each chunk."""
    if name is None or name == "none":
        return [zarr.codecs.Crc32cCodec()]
    if name == "blosc-zstd":
        return [zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"), zarr.codecs.Crc32cCodec()]
    raise UserError(f"unknown compressor {name!r} (choose blosc-zstd or none)")


def creation_labels(per_sequence: dict[str, np.ndarray], layout: StoreLayout) -> dict[str, np.ndarray]:
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
