"""actstore: run a language model once per dataset and keep its activations in Zarr stores.

Three rooms: ``actstore.store`` (what is kept), ``actstore.models`` (what is loaded) and
``actstore.engine`` (what runs: extraction). Public API: ``open_store(url)`` -> ``ActivationStore``
with ``.activations(layer)``, ``.sequences()``, ``.xy(layer)``, ``.meta``; ``write_store(url, arrays, ...)``
(activations computed elsewhere, as a store); ``extract(ExtractConfig(...))`` (the engine,
imported on first use).
"""

__version__ = "0.1.0"

from actstore.store import ActivationStore, open_store  # noqa: E402
from actstore.store.from_arrays import write_store  # noqa: E402

__all__ = ["ActivationStore", "ExtractConfig", "extract", "open_store", "write_store", "__version__"]


def __getattr__(name: str):
    if name in ("ExtractConfig", "extract"):
        import importlib

        return getattr(importlib.import_module("actstore.engine.extraction"), name)
    raise AttributeError(f"module 'actstore' has no attribute {name!r}")
