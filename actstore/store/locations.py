"""Where stores live: ``ROOT/<model-slug>/<dataset>/<split>[.heads][.chat].<view>.zarr``.

The view is always the last part before ``.zarr``, so the sibling view of a store (the ``no``
store of a ``yes`` store, for CCS) is found by replacing ``.<view>.zarr``; the extras that make
two extractions different (``--site heads``, ``--prompt-format chat``) come before it, so they never collide.
ROOT may be a local directory or an fsspec URL (``memory://``, ``s3://`` ...).

``--limit`` is not part of the name: one store holds the first N examples of its split and grows
when more are asked for (actstore/store/growth.py); a smaller limit reads a prefix. Stores named
``<split>.limit<N>...`` by earlier versions are read where no store of the new name exists, and
``actstore migrate`` renames them.

Wherever a store is asked for, it may also be named ``MODEL/DATASET/SPLIT[/VIEW]`` (the view
defaults to ``plain``; a hub id's ``/`` is part of MODEL), found under the store root with the
``--prompt-format`` it was extracted with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from common import UserError
from common.names import check_name

VIEW_NAMES = ("plain", "stim", "yes", "no")  # the views a store name may end in (templates: actstore/engine/views.py)

STORE_SUFFIX = ".zarr"
PATH_STARTS = ("/", "./", "../", "~")

STORE_HELP = ("Store: MODEL/DATASET/SPLIT[/VIEW] under --store-root (view: plain by default), or a path or URL "
              "(its sibling views are found by name), or comma-separated stores of one split's views.")


def model_slug(model: str) -> str:
    """A directory name for a model: an alias as is, a local path by its name, a hub id with ``--``."""
    path = Path(model).expanduser()
    if path.exists():
        name = path.stem if path.suffix == ".gguf" else path.resolve().name
    elif model.startswith(PATH_STARTS):  # a local model moved since: named as it was
        name = path.stem if path.suffix == ".gguf" else path.name
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


def store_url(root: str | Path, model: str, dataset: str, split: str, view: str, *, site: str = "residual",
              prompt_format: str = "raw") -> str:
    return StoreName(model_slug(model), dataset, split, view, None, site, prompt_format).url(root)


SPLITS = ("train", "test")


def parse_store_name(spec: str, *, limit: int | None = None, site: str = "residual",
                     prompt_format: str = "raw") -> "StoreName | None":
    """The store ``MODEL/DATASET/SPLIT[/VIEW]`` names, or None when ``spec`` is a path or URL."""
    text = str(spec).strip().rstrip("/")
    parts = text.split("/")
    if "://" in text or text.endswith(STORE_SUFFIX) or text.startswith(("/", ".", "~")) or Path(text).exists():
        return None
    view = parts.pop() if len(parts) >= 4 and parts[-1] in VIEW_NAMES else "plain"
    if len(parts) < 3 or parts[-1] not in SPLITS:
        return None
    return StoreName(model_slug("/".join(parts[:-2])), parts[-2], parts[-1], view, limit, site, prompt_format)


def store_location(spec: str, *, root: str | Path, limit: int | None = None, site: str = "residual",
                   prompt_format: str = "raw") -> str:
    """A store named ``MODEL/DATASET/SPLIT[/VIEW]`` as its URL under ``root``; a path or URL as it is."""
    name = parse_store_name(spec, limit=limit, site=site, prompt_format=prompt_format)
    return name.url_found(root) if name else str(spec)


PLACE = re.compile(r"^(?P<split>[^/.]+)(?:\.limit(?P<limit>\d+))?(?P<heads>\.heads)?(?:\.(?P<format>chat))?"
                   r"\.(?P<view>[^/.]+)\.zarr$")


def name_of_place(url: str, root: str | Path | None = None) -> "StoreName | None":
    """What a store's file name (``<split>[extras].<view>.zarr``) says it holds, and its model and dataset
    where it lies at ``<slug>/<dataset>/`` under ``root``; None for any other file name."""
    text = _comparable(url).rstrip("/")
    match = PLACE.match(text.rsplit("/", 1)[-1])
    if match is None:
        return None
    model = dataset = None
    prefix = _comparable(root).rstrip("/") + "/" if root is not None else None
    if prefix and text.startswith(prefix) and text[len(prefix):].count("/") == 2:
        model, dataset = text[len(prefix):].split("/")[:2]
    return StoreName(model, dataset, match["split"], match["view"], int(match["limit"]) if match["limit"] else None,
                     "heads" if match["heads"] else "residual", match["format"] or "raw")


def _exists(url: str) -> bool:
    from actstore.store.opening import find_store

    try:
        return find_store(url) is not None
    except Exception:  # noqa: BLE001 - something else is there: the new name stands
        return False


def _comparable(place: str | Path) -> str:
    text = str(place)
    return text if "://" in text else str(Path(text).expanduser().absolute())


@dataclass(frozen=True)
class StoreName:
    """What a store's name says it holds; ``model`` is the model's directory name (``model_slug``).
    A file name alone says nothing of the model and dataset (None)."""

    model: str | None
    dataset: str | None
    split: str
    view: str = "plain"
    limit: int | None = None
    site: str = "residual"
    prompt_format: str = "raw"

    def url(self, root: str | Path) -> str:
        """Where the store is made and grown (the limit is what is read of it, not part of its name)."""
        return self._url(root, None)

    def url_found(self, root: str | Path) -> str:
        """``url``, or the legacy name of this limit where only a store of that name exists."""
        url, legacy = self.url(root), self.legacy_url(root)
        if legacy is not None and not _exists(url) and _exists(legacy):
            return legacy
        return url

    def legacy_url(self, root: str | Path) -> str | None:
        """Where an earlier version put the store of this limit (``<split>.limit<N>...``); None without a limit."""
        return self._url(root, self.limit) if self.limit is not None else None

    def _url(self, root: str | Path, limit: int | None) -> str:
        check_name(self.dataset)
        return "/".join([str(root).rstrip("/"), self.model, self.dataset,
                         store_name(check_name(self.split, "split"), check_name(self.view, "view"), limit=limit,
                                    site=self.site, prompt_format=self.prompt_format)])

    def mismatches(self, meta: dict) -> list[str]:
        """What the store's recorded attributes (``meta``) say that this name does not; a store made
        before an attribute was recorded is not held to it."""
        found = []
        recorded_models = [str(meta[key]) for key in ("model", "model_id") if meta.get(key)]
        # a local model named by a relative path that is gone from here: also by its directory's name
        models = {model_slug(m) for m in recorded_models} | {model_slug("./" + Path(m).name) for m in recorded_models}
        if self.model is not None and models and self.model not in models:
            found.append(f"model {meta.get('model')} (the name says {self.model})")
        recorded = {"site": "residual", "prompt_format": "raw", **meta}
        for key in ("dataset", "split", "view", "site", "prompt_format"):
            unknown = key == "dataset" and self.dataset is None
            if key in recorded and not unknown and recorded[key] != getattr(self, key):
                found.append(f"{key} {recorded[key]} (the name says {getattr(self, key)})")
        held = recorded.get("limit")
        if self.limit is not None and held is not None and held < self.limit:
            found.append(f"only the first {held} examples (asked for {self.limit})")
        return found

    def check(self, meta: dict, url: str, asked: str) -> None:
        """A UserError when the store at ``url``, found as ``asked``, holds something else than the name says."""
        differing = self.mismatches(meta)
        if differing:
            raise UserError(f"{asked}: the store at {url} holds {'; '.join(differing)}; it is not the store this "
                            "name stands for: move it to its own name or re-extract it there")


@dataclass(frozen=True)
class StoreNames:
    """How store names resolve: under ``root`` (None: the per-user store root), for ``--limit`` and
    ``--prompt-format``."""

    root: str | None = None
    limit: int | None = None
    prompt_format: str = "raw"

    @property
    def resolved_root(self) -> str:
        from common import default_store_root

        return str(self.root or default_store_root())

    def url(self, spec: str) -> str:
        return store_location(spec, root=self.resolved_root, limit=self.limit, prompt_format=self.prompt_format)

    def name(self, spec: str, url: str) -> "StoreName | None":
        """What ``spec`` (resolved to ``url``) says the store holds: its name, or its place under the root. Only
        an earlier version's name says how many examples (a store of the new name is read up to the limit)."""
        name = parse_store_name(spec, limit=self.limit, prompt_format=self.prompt_format)
        if name is not None and url != name.legacy_url(self.resolved_root):
            name = replace(name, limit=None)
        return name or name_of_place(url, self.resolved_root)
