"""actstore: run a language model once per dataset and keep its activations in Zarr stores.

Public API: ``open_store(url)`` -> ``ActivationStore`` with ``.activations(layer)``,
``.sequences()``, ``.meta`` (see actstore/store.py).
"""

__version__ = "0.1.0"

from actstore.store import ActivationStore, open_store  # noqa: E402

__all__ = ["ActivationStore", "open_store", "__version__"]
