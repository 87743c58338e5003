"""The engine: what runs. Sequences and their views, the prefix tree and its rows, attention masks,
capture of the sites the store keeps, the forward pass and the float32 log-likelihood head, blocks,
and ``extract``, which fills stores (``actstore.store``) with a loaded model (``actstore.models``).

The engine uses the models and the store; neither uses the engine (the import-linter contract in
pyproject.toml). ``extract`` and ``ExtractConfig`` are imported on first use, so that reading a view's
name does not import torch.
"""

__all__ = ["ExtractConfig", "StoreResult", "extract"]


def __getattr__(name: str):
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("actstore.engine.extraction"), name)
    raise AttributeError(f"module 'actstore.engine' has no attribute {name!r}")
