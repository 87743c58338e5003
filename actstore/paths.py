"""Per-user directories (XDG style), overridable with environment variables."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """Root for everything the toolkit caches: ``$GENIES_HOME`` or ``$XDG_CACHE_HOME/genies``."""
    if os.environ.get("GENIES_HOME"):
        return Path(os.environ["GENIES_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "genies"


def default_data_dir() -> Path:
    return user_cache_dir() / "data"


def default_store_root() -> Path:
    return user_cache_dir() / "stores"


def default_model_cache() -> Path:
    return user_cache_dir() / "models"


def demo_data_dir() -> Path:
    return user_cache_dir() / "demo-data"
