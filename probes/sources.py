"""Where probes get activations: the sibling view stores of one dataset split, or arrays in memory.

Extraction writes one store per view at ``ROOT/<model>/<dataset>/<split>[.heads].<view>.zarr``
(actstore/store/locations.py), so the views of a split are found from any one of them by swapping
the ``.<view>.zarr`` suffix, its test split by swapping ``<split>`` (same extras), and its
per-head store by adding ``.heads``; explicit URLs (one per view) work too. A method asks a source for ``residual(view, layer)``,
``heads(view, layer)`` or ``loglik()``; a store source reads each array once and keeps it
until ``release()``, so a layer sweep reads every layer of every store exactly once.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from distributions.split_file import check_data_unchanged
from common import UserError
from actstore.store.hints import extract_command
from actstore.store.growth import covers
from actstore.store.info import no_store_error
from actstore.store.locations import name_of_place
from probes.labels import Labels

STORE_NAME = re.compile(r"^(?P<prefix>.*/)?(?P<split>[^/.]+)(?P<extras>(?:\.[^/.]+)*?)\.(?P<view>[^/.]+)\.zarr/?$")
MODEL_KEYS = ("model_id", "model")


class FeatureSource(ABC):
    """Activations and labels of one dataset split (possibly several views)."""

    labels: Labels
    meta: dict  # meta of the split's stores: model, model_id, dataset, split, hidden_size, ...

    @property
    def name(self) -> str:
        if self.meta.get("dataset") and self.meta.get("split"):
            return f"{self.meta['dataset']}/{self.meta['split']}"
        return str(self.meta.get("name", "arrays"))

    @abstractmethod
    def residual(self, view: str, layer: int) -> np.ndarray: ...

    @abstractmethod
    def heads(self, view: str, layer: int) -> np.ndarray: ...

    @abstractmethod
    def loglik(self) -> np.ndarray: ...

    @abstractmethod
    def layers(self, view: str) -> list[int]: ...

    @abstractmethod
    def head_layers(self, view: str) -> list[int]: ...

    @abstractmethod
    def require(self, views: tuple[str, ...], *, heads: bool = False, loglik: bool = False) -> None:
        """Raise a UserError naming what is missing and how to extract it."""

    def subset(self, rows: np.ndarray) -> "FeatureSource":
        return SubsetSource(self, np.asarray(rows))

    def release(self) -> None:
        """Drop cached arrays."""


def sibling_url(url: str, *, view: str | None = None, split: str | None = None, heads: bool = False) -> str | None:
    """``url`` with its view and/or split swapped (``heads``: the ``--site heads`` store), or None
    when the name is not ``<split>[.extras].<view>.zarr``."""
    match = STORE_NAME.match(str(url))
    if not match:
        return None
    extras = match["extras"]
    if heads and "heads" not in extras.split("."):
        extras += ".heads"
    return f"{match['prefix'] or ''}{split or match['split']}{extras}.{view or match['view']}.zarr"


def _find(url: str):
    from actstore.store import find_store, open_store

    return open_store(url) if find_store(url) is not None else None


class StoreSource(FeatureSource):
    """The view stores of one (model, dataset, split): one URL, or explicit URLs of several views."""

    def __init__(self, urls: str | list[str], limit: int | None = None):
        """``limit``: read the first ``limit`` examples (the stores may hold more); None: all they hold."""
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise UserError("no store given")
        self.limit = limit
        self._rows: int | None = None  # sequences of the first ``limit`` examples
        self._stores: dict[str, object] = {}
        self._urls: dict[str, str] = {}
        for url in urls:
            store = _find(url)
            if store is None:
                raise no_store_error(url)
            match = STORE_NAME.match(str(url))
            view = store.meta.get("view") or (match["view"] if match else "plain")
            if view in self._stores:
                raise UserError(f"{url}: a second store for view {view!r} (first: {self._urls[view]})")
            self._add(view, url, store)
        self.primary_url = urls[0]
        self.meta = dict(self._stores[next(iter(self._stores))].meta)
        if limit is not None:
            self.meta.update(limit=limit, n_sequences=self._rows)
        self.labels = Labels.from_sequences(self._sequences(next(iter(self._stores))))
        try:
            self.labels.pairs
        except ValueError as err:
            raise UserError(f"{self.primary_url}: {err}") from None
        self._cache: dict[tuple, np.ndarray] = {}

    def _add(self, view: str, url: str, store) -> None:
        check_data_unchanged(store.meta, url)
        named = name_of_place(url)
        if named is not None:
            named.check(store.meta, url, url)
        if self.limit is not None and not covers(store.meta, self.limit):
            root = str(url).rstrip("/").rsplit("/", 3)[0]
            grow = extract_command({**store.meta, "limit": self.limit}, [view], exact=True, root=root)
            raise UserError(f"{url}: holds the first {store.meta['limit']} examples, not {self.limit}; grow it with: {grow}")
        if self._rows is None and self.limit is not None:
            self._rows = prefix_rows(store.sequences()["example"], self.limit)
        if self._stores:
            first = next(iter(self._stores.values()))
            _check_siblings(first, store, self._rows)
        self._stores[view] = store
        self._urls[view] = url

    def _prefix(self, values: np.ndarray) -> np.ndarray:
        return values if self._rows is None else values[:self._rows]

    def _sequences(self, view: str) -> dict[str, np.ndarray]:
        return {name: self._prefix(values) for name, values in self._stores[view].sequences().items()}

    def _store(self, view: str):
        if view not in self._stores:
            self.require((view,))
        return self._stores[view]

    def url(self, view: str) -> str:
        self._store(view)
        return self._urls[view]

    @property
    def views(self) -> list[str]:
        return list(self._stores)

    def _try_sibling(self, view: str) -> bool:
        url = sibling_url(self.primary_url, view=view)
        if url is None:
            return False
        store = _find(url)
        if store is None:
            return False
        if store.meta.get("view", view) != view:
            raise UserError(f"{url}: holds view {store.meta.get('view')!r}, expected {view!r}")
        self._add(view, url, store)
        return True

    def _try_heads_store(self, view: str) -> bool:
        """Switch ``view`` to its ``--site heads`` store (same sequences, plus per-head outputs) if one exists."""
        url = sibling_url(self._urls[view], heads=True)
        store = _find(url) if url and url != self._urls[view] else None
        if store is None or "heads" not in store.group:
            return False
        _check_siblings(self._stores[view], store, self._rows)
        self._stores[view], self._urls[view] = store, url
        self._cache.clear()
        return True

    def require(self, views: tuple[str, ...], *, heads: bool = False, loglik: bool = False) -> None:
        missing = [v for v in views if v not in self._stores and not self._try_sibling(v)]
        if missing:
            where = sibling_url(self.primary_url, view=missing[0])
            looked = (f"looked for {where}" if where else
                      f"{self.primary_url} is not named <split>.<view>.zarr, so pass each view's store explicitly")
            raise UserError(f"{self.name}: missing view(s) {','.join(missing)} ({looked}); add them with: "
                            f"{extract_command(self.meta, missing)}")
        if heads:
            lacking = [v for v in views if "heads" not in self._stores[v].group and not self._try_heads_store(v)]
            if lacking:
                raise UserError(f"{self.name}: view(s) {','.join(lacking)} extracted without per-head activations; "
                                f"add them with: {extract_command(self.meta, lacking, heads=True)}")
        if loglik and "loglik" not in self._store("plain").group:
            raise UserError(f"{self.name}: the plain store has no log-likelihoods; "
                            f"re-extract with: {extract_command(self.meta, ['plain'])}")

    def _cached(self, key: tuple, read) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = read()
        return self._cache[key]

    def residual(self, view: str, layer: int) -> np.ndarray:
        return self._cached(("residual", view, layer), lambda: self._prefix(self._store(view).activations(layer)))

    def heads(self, view: str, layer: int) -> np.ndarray:
        self.require((view,), heads=True)
        return self._cached(("heads", view, layer), lambda: self._prefix(self._store(view).head_activations(layer)))

    def loglik(self) -> np.ndarray:
        self.require(("plain",), loglik=True)
        return self._cached(("loglik",), lambda: np.asarray(self._sequences("plain")["loglik"],
                                                                  dtype=np.float64))

    def layers(self, view: str) -> list[int]:
        return list(self._store(view).meta["layers"])

    def head_layers(self, view: str) -> list[int]:
        return list(self._store(view).meta.get("head_layers") or [])

    def release(self) -> None:
        self._cache.clear()

    def test_split(self) -> "StoreSource | None":
        """The same dataset's test split (same views found the same way), if it was extracted."""
        if self.meta.get("split") == "test":
            return None
        url = sibling_url(self.primary_url, split="test")
        if url is None or _find(url) is None:
            return None
        test = StoreSource(url, self.limit)
        _check_same_extraction(self, test)
        return test


def _check_same_extraction(train: StoreSource, test: StoreSource) -> None:
    """The test split found beside a train store is the same dataset, from the same model, extracted the same way."""
    a, b = train.meta, test.meta
    if b.get("split", "test") != "test":
        raise UserError(f"{test.primary_url}: holds split {b['split']!r}, not the test split its name says")
    identity_a, identity_b = a.get("identity") or {}, b.get("identity") or {}
    for key in (*MODEL_KEYS, "dataset", "prompt_format", "limit", "model_fingerprint", "quantization"):
        if a.get(key, identity_a.get(key)) != b.get(key, identity_b.get(key)):
            raise UserError(f"{test.primary_url} is not the test split of {train.primary_url}: "
                            f"{key} {b.get(key, identity_b.get(key))!r} vs {a.get(key, identity_a.get(key))!r}")


def prefix_rows(example: np.ndarray, limit: int) -> int:
    """How many of a store's sequences (ordered by example) belong to its first ``limit`` examples."""
    starts = np.flatnonzero(np.r_[True, example[1:] != example[:-1]])
    return int(starts[limit]) if limit < len(starts) else len(example)


def _check_siblings(first, other, rows: int | None = None) -> None:
    """Views of one split must describe the same sequences (the first ``rows`` of them, where a prefix is
    read), from the same model and the same data file."""
    a, b = first.meta, other.meta
    held = ("n_sequences", "limit") if rows is None else ()
    for key in ("hidden_size", *MODEL_KEYS, "dataset", "split", "prompt_format", *held):
        if key in a and key in b and a[key] != b[key]:
            raise UserError(f"{other.url} does not match {first.url}: {key} {b[key]!r} vs {a[key]!r}")
    if a.get("fingerprint") and b.get("fingerprint") and a["fingerprint"] != b["fingerprint"]:
        raise UserError(f"{other.url} does not match {first.url}: extracted from another version of the data file "
                        f"(fingerprint {b['fingerprint'][:19]}... vs {a['fingerprint'][:19]}...); "
                        "re-extract both views from the same file with --overwrite")
    sa, sb = first.sequences(), other.sequences()
    for key in ("example", "response", "score"):
        if not np.array_equal(sa[key][:rows], sb[key][:rows]):
            raise UserError(f"{other.url} does not match {first.url}: different {key} per sequence")


@dataclass(eq=False)
class ArraySource(FeatureSource):
    """In-memory activations, for tests and for callers that already hold arrays."""

    labels: Labels
    residual_by_view: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    heads_by_view: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    loglik_values: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def require(self, views: tuple[str, ...], *, heads: bool = False, loglik: bool = False) -> None:
        available = self.heads_by_view if heads else self.residual_by_view
        missing = [v for v in views if v not in available]
        if missing:
            raise UserError(f"{self.name}: missing view(s) {','.join(missing)}; add them with: "
                            f"{extract_command(self.meta, missing, heads=heads)}")
        if loglik and self.loglik_values is None:
            raise UserError(f"{self.name}: no log-likelihoods")

    def residual(self, view: str, layer: int) -> np.ndarray:
        self.require((view,))
        if layer not in self.residual_by_view[view]:
            raise UserError(f"{self.name}: layer {layer} not in view {view}")
        return np.asarray(self.residual_by_view[view][layer], dtype=np.float32)

    def heads(self, view: str, layer: int) -> np.ndarray:
        self.require((view,), heads=True)
        return np.asarray(self.heads_by_view[view][layer], dtype=np.float32)

    def loglik(self) -> np.ndarray:
        self.require((), loglik=True)
        return np.asarray(self.loglik_values, dtype=np.float64)

    def layers(self, view: str) -> list[int]:
        self.require((view,))
        return sorted(self.residual_by_view[view])

    def head_layers(self, view: str) -> list[int]:
        return sorted(self.heads_by_view.get(view, {}))


class SubsetSource(FeatureSource):
    """Some rows (sequences) of another source; the parent keeps the cache."""

    def __init__(self, parent: FeatureSource, rows: np.ndarray):
        self.parent, self.rows = parent, rows
        self.labels = parent.labels.subset(rows)
        self.meta = parent.meta

    def residual(self, view: str, layer: int) -> np.ndarray:
        return self.parent.residual(view, layer)[self.rows]

    def heads(self, view: str, layer: int) -> np.ndarray:
        return self.parent.heads(view, layer)[self.rows]

    def loglik(self) -> np.ndarray:
        return self.parent.loglik()[self.rows]

    def layers(self, view: str) -> list[int]:
        return self.parent.layers(view)

    def head_layers(self, view: str) -> list[int]:
        return self.parent.head_layers(view)

    def require(self, views: tuple[str, ...], *, heads: bool = False, loglik: bool = False) -> None:
        self.parent.require(views, heads=heads, loglik=loglik)

    def release(self) -> None:
        self.parent.release()
