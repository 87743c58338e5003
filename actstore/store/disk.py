"""A full disk and values float16 cannot hold: refused in one line that says what to do."""

from __future__ import annotations

import errno
import os
import shutil

import numpy as np

from common import UserError

FLOAT16_MAX = float(np.finfo(np.float16).max)

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(url: str, when: str = "", needed: int | None = None, blocks_left: int | None = None) -> str:
    from actstore.store.info import human_bytes

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
