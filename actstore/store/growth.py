"""A store grown to more examples of its split: one store per (model, dataset, split, view) holds the
first N examples, and a larger ``--limit`` appends the blocks of the examples it lacks.

Growing resizes every array along the sequences, writes the new labels and reseals the attributes;
the new blocks are then computed like any missing block (resumable, checksummed). A last block that
was partial keeps its rows: ``kept_rows`` records where they end and their checksums, so that only the
new rows of that block are computed and the kept ones are checked before they are written back.
While the arrays are resized the store is marked ``creating``: a growth killed there is started afresh.
"""

from __future__ import annotations

import numpy as np

from common import UserError
from actstore.store.activation_store import ActivationStore
from actstore.store.integrity import block_crcs, crc32, metadata_digest, store_salt
from actstore.store.layout import TEXT_ARRAYS, StoreLayout, attrs_checksum, creation_labels
from actstore.store.opening import open_for_writing

KEPT_ROWS = "kept_rows"


def held_examples(meta: dict) -> int | None:
    """How many examples of its split a store holds (None: all of them)."""
    return meta.get("limit")


def covers(meta: dict, limit: int | None) -> bool:
    """Whether a store holds at least the first ``limit`` examples (None: the whole split)."""
    held = held_examples(meta)
    return held is None or (limit is not None and held >= limit)


def grow(store: ActivationStore, per_sequence: dict[str, np.ndarray], limit: int | None) -> ActivationStore:
    """Grow ``store`` to the sequences of ``per_sequence`` (the first ``limit`` examples; None: all), whose
    leading rows must be the ones it holds; return it open for writing, its new blocks not yet written."""
    store = open_for_writing(store.url)
    old = store.layout
    n = len(per_sequence["example"])
    for name in ("example", "response", "score", *(TEXT_ARRAYS if old.with_texts else ())):
        held = store.read(name)
        if not np.array_equal(np.asarray(per_sequence[name][:old.n_sequences], dtype=held.dtype), held):
            raise UserError(f"{store.url}: its sequences are not the first ones of the data now ({name} differs); "
                            "re-extract with --overwrite")
    new = StoreLayout(**{**old.__dict__, "n_sequences": n})
    group = store.group
    kept = None
    if old.n_sequences % old.block_size and n > old.n_sequences and store.blocks_done()[old.n_blocks - 1]:
        last = old.n_blocks - 1
        kept = {"block": last, "stop": old.n_sequences,
                "checksums": [int(value) for value in np.asarray(group["block_checksums"][last])]}
    group.attrs.update({"creating": True, "complete": False})
    for name, (shape, _) in new.array_shapes().items():
        group[name].resize(shape)
    labels = creation_labels(per_sequence, new)
    for name, values in labels.items():
        group[name][old.n_sequences:] = values[old.n_sequences:]
    if kept is not None:
        group["block_done"][kept["block"]] = 0
    attrs = dict(group.attrs)
    attrs.update({
        "n_sequences": n, "n_examples": int(len(np.unique(per_sequence["example"]))), "limit": limit,
        "identity": {key: value for key, value in (attrs.get("identity") or {}).items() if key != "limit"},
        "label_checksums": {name: block_crcs(values, new.block_size) for name, values in labels.items()},
        "array_metadata": {name: metadata_digest(group[name].metadata.to_dict()) for name in new.array_shapes()},
        KEPT_ROWS: kept, "creating": False, "complete": False,
    })
    attrs.pop("attrs_checksum", None)
    attrs["attrs_checksum"] = attrs_checksum(attrs)
    group.attrs.update(attrs)
    return open_for_writing(store.url)


def kept_rows(store: ActivationStore, block: int) -> dict[str, np.ndarray] | None:
    """The rows a grown store kept of ``block`` (its last block before growing), each array checked against
    the checksums it had then; None when the block kept nothing or a kept row no longer checks out."""
    kept = store.meta.get(KEPT_ROWS)
    if not kept or kept["block"] != block:
        return None
    layout = store.layout
    start = layout.block_range(block)[0]
    salt = store_salt(store.meta.get("store_id"))
    rows = {}
    for column, wanted in zip(layout.checksum_columns, kept["checksums"]):
        array = store.group[column.array]
        where = (column.row, slice(start, kept["stop"])) if column.row is not None else slice(start, kept["stop"])
        values = np.asarray(array[where])
        if crc32(values, salt) != wanted:
            return None
        if column.row is None:
            rows[column.array] = values
        else:
            rows.setdefault(column.array, []).append(values)
    return {name: np.stack(values) if isinstance(values, list) else values for name, values in rows.items()}


def forget_kept_rows(store: ActivationStore) -> None:
    """After the kept block is written whole again."""
    attrs = dict(store.group.attrs)
    if attrs.get(KEPT_ROWS) is None:
        return
    attrs[KEPT_ROWS] = None
    attrs.pop("attrs_checksum", None)
    store.group.attrs.update({KEPT_ROWS: None, "attrs_checksum": attrs_checksum(attrs)})
