"""The store: what is kept. One Zarr v3 group per (model, dataset, split, view): its format and
integrity checks, reading and writing, where stores live and how they are named, the lock and the
work split of several writers, and what a store holds (``actstore info``, notebook frames).

Nothing here loads or runs a model: the store neither imports ``actstore.models`` nor
``actstore.engine`` (the import-linter contract in pyproject.toml).
"""

from actstore.store.activation_store import ActivationStore
from actstore.store.disk import DISK_FULL, check_float16_range, disk_full_message
from actstore.store.layout import LAYER_CONVENTION, PER_SEQUENCE, STORE_FORMAT, TEXT_ARRAYS, StoreLayout, attrs_checksum
from actstore.store.opening import NoStoreHere, create_store, find_store, open_for_writing, open_store

__all__ = ["ActivationStore", "DISK_FULL", "LAYER_CONVENTION", "NoStoreHere", "PER_SEQUENCE", "STORE_FORMAT",
           "StoreLayout", "TEXT_ARRAYS", "attrs_checksum", "check_float16_range", "create_store", "disk_full_message",
           "find_store", "open_for_writing", "open_store"]
