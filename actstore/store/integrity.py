"""Checksums that make a store's reads return exactly what was written, or fail.

Every data array's chunks carry zarr's crc32c codec, so a truncated or altered chunk fails to
decode. That alone cannot see a chunk that is missing (zarr reads its fill value) or one copied
from another block, so each block also records, when it is flagged, the crc32 of the bytes it
wrote: one column per (array, layer row) in the store's ``block_checksums`` array, one row per
block. The labels and texts written at creation (example, response, score, prompt and response
texts) record theirs in the attributes. A read compares every flagged block it returns with its recorded checksum.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

LABEL_ARRAYS = ("example", "response", "score", "prompt_text", "response_text")
TEXT_SEPARATOR = "\x1f"  # between the texts of one block when their checksum is taken


def crc32(values: np.ndarray, salt: int = 0) -> int:
    """crc32 of the values' bytes, started from ``salt`` (a store's own: see ``store_salt``)."""
    values = np.asarray(values)
    if values.dtype.kind in "OTU":  # texts: the checksum of their UTF-8 bytes, in order
        return zlib.crc32(TEXT_SEPARATOR.join(map(str, values.reshape(-1))).encode("utf-8"), salt) & 0xFFFFFFFF
    return zlib.crc32(np.ascontiguousarray(values).view(np.uint8).reshape(-1), salt) & 0xFFFFFFFF


def block_crcs(values: np.ndarray, block_size: int, salt: int = 0) -> list[int]:
    """crc32 of each ``block_size`` slice of ``values`` along its first axis."""
    return [crc32(values[start:start + block_size], salt) for start in range(0, len(values), block_size)]


def store_salt(store_id: str | None) -> int:
    """Where a block checksum starts: from the store's own id, so that an array and its checksums moved
    in from another store do not check out here (stores made before store ids start from 0)."""
    return zlib.crc32(store_id.encode("utf-8")) if store_id else 0


def metadata_digest(metadata: dict) -> str:
    """sha256 of an array's zarr metadata (dtype, shape, chunks, codecs, fill value), bound into the
    store's sealed attributes at creation: an edited dtype would read the same bytes as other numbers."""
    import hashlib
    import json

    return "sha256:" + hashlib.sha256(json.dumps(metadata, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Column:
    """One checksum column: an array, and its row along the first axis for layered arrays."""

    array: str
    row: int | None = None

    @property
    def key(self) -> str:
        return self.array if self.row is None else f"{self.array}[{self.row}]"

@dataclass(frozen=True)
class Damage:
    """A block of one array whose bytes are not the ones that were written."""

    array: str
    block: int
    first: int  # first and last sequence of the block
    last: int
    reason: str
    layer: int | None = None  # the layer (convention of the store) of a layered array

    def __str__(self) -> str:
        layer = f" layer {self.layer}" if self.layer is not None else ""
        return f"array {self.array}{layer} block {self.block} (sequences {self.first}-{self.last}): {self.reason}"


MISMATCH = "data does not match the checksum recorded when it was written (chunk missing, truncated or changed)"
