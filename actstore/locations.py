"""Where stores live: ``ROOT/<model-slug>/<dataset>/<split>[.limit<N>][.heads][.chat].<view>.zarr``.

The view is always the last part before ``.zarr``, so the sibling view of a store (the ``no``
store of a ``yes`` store, for CCS) is found by replacing ``.<view>.zarr``; the extras that make
two extractions different (``--limit``, ``--site heads``, ``--prompt-format chat``) come before it, so they never collide.
ROOT may be a local directory or an fsspec URL (``memory://``, ``s3://`` ...).
"""

from __future__ import annotations

import re
from pathlib import Path

from actstore.names import check_name

STORE_SUFFIX = ".zarr"


def model_slug(model: str) -> str:
    """A directory name for a model: an alias as is, a local path by its name, a hub id with ``--``."""
    path = Path(model).expanduser()
    if path.exists():
        name = path.stem if path.suffix == ".gguf" else path.resolve().name
    else:
        name = model.strip("/").replace("/", "--")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    return slug if slug.strip(".") else "model"  # never "", "." or "..": the slug is a directory


def store_name(split: str, view: str, *, limit: int | None = None, site: str = "residual",
               prompt_format: str = "raw") -> str:
    parts = [split]
    if limit is not None:
        parts.append(f"limit{limit}")
    if site != "residual":
        parts.append(site)
    if prompt_format != "raw":
        parts.append(prompt_format)
    parts.append(view)
    return ".".join(parts) + STORE_SUFFIX


def store_url(root: str | Path, model: str, dataset: str, split: str, view: str, *, limit: int | None = None,
              site: str = "residual", prompt_format: str = "raw") -> str:
    check_name(dataset)
    return "/".join([str(root).rstrip("/"), model_slug(model), dataset,
                     store_name(check_name(split, "split"), check_name(view, "view"), limit=limit, site=site,
                                prompt_format=prompt_format)])


def sibling_view_url(url: str, view: str, other_view: str) -> str:
    """The store of ``other_view`` extracted with the same settings as ``url``."""
    ending = f".{view}{STORE_SUFFIX}"
    if not url.rstrip("/").endswith(ending):
        raise ValueError(f"{url} is not a store of view {view!r}")
    return url.rstrip("/")[: -len(ending)] + f".{other_view}{STORE_SUFFIX}"
