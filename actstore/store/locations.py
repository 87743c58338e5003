"""Where stores live: ``ROOT/<model-slug>/<dataset>/<split>[.limit<N>][.heads][.chat].<view>.zarr``.

The view is always the last part before ``.zarr``, so the sibling view of a store (the ``no``
store of a ``yes`` store, for CCS) is found by replacing ``.<view>.zarr``; the extras that make
two extractions different (``--limit``, ``--site heads``, ``--prompt-format chat``) come before it, so they never collide.
ROOT may be a local directory or an fsspec URL (``memory://``, ``s3://`` ...).

Wherever a store is asked for, it may also be named ``MODEL/DATASET/SPLIT[/VIEW]`` (the view
defaults to ``plain``; a hub id's ``/`` is part of MODEL), found under the store root with the
``--limit`` and ``--prompt-format`` it was extracted with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from common.names import check_name

VIEW_NAMES = ("plain", "stim", "yes", "no")  # the views a store name may end in (templates: actstore/engine/views.py)

STORE_SUFFIX = ".zarr"

STORE_HELP = ("Store: MODEL/DATASET/SPLIT[/VIEW] under --store-root (view: plain by default), or a path or URL "
              "(its sibling views are found by name), or comma-separated stores of one split's views.")


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


SPLITS = ("train", "test")


def store_location(spec: str, *, root: str | Path, limit: int | None = None, site: str = "residual",
                   prompt_format: str = "raw") -> str:
    """A store named ``MODEL/DATASET/SPLIT[/VIEW]`` as its URL under ``root``; a path or URL as it is."""
    text = str(spec).strip().rstrip("/")
    parts = text.split("/")
    if "://" in text or text.endswith(STORE_SUFFIX) or text.startswith(("/", ".", "~")) or Path(text).exists():
        return str(spec)
    view = parts.pop() if len(parts) >= 4 and parts[-1] in VIEW_NAMES else "plain"
    if len(parts) < 3 or parts[-1] not in SPLITS:
        return str(spec)
    split, dataset, model = parts[-1], parts[-2], "/".join(parts[:-2])
    return store_url(root, model, dataset, split, view, limit=limit, site=site, prompt_format=prompt_format)


@dataclass(frozen=True)
class StoreNames:
    """How store names resolve: under ``root`` (None: the per-user store root), for ``--limit`` and
    ``--prompt-format``."""

    root: str | None = None
    limit: int | None = None
    prompt_format: str = "raw"

    def url(self, spec: str) -> str:
        from common import default_store_root

        return store_location(spec, root=self.root or default_store_root(), limit=self.limit,
                              prompt_format=self.prompt_format)
