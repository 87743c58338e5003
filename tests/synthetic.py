"""Synthetic activations with a planted "preference" direction, in memory or as real stores.

Reusable by any test: ``planted(...)`` returns a ``Planted`` with labels, per-view per-layer
arrays and the planted unit direction; ``write_stores(planted, root)`` writes it as complete
stores at ``root/<model>/<dataset>/<split>.<view>.zarr`` (the extraction layout) and returns
the URLs by view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actstore.store import StoreLayout, create_store
from probes.labels import Labels
from probes.sources import ArraySource


@dataclass
class Planted:
    example: np.ndarray
    response: np.ndarray
    score: np.ndarray
    direction: np.ndarray  # unit vector, residual space
    residual: dict[str, dict[int, np.ndarray]]
    heads: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    loglik: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    signal_layers: tuple[int, ...] = ()
    signal_heads: tuple[tuple[int, int], ...] = ()

    @property
    def labels(self) -> Labels:
        return Labels(self.example, self.score == 1.0)

    def source(self) -> ArraySource:
        return ArraySource(self.labels, self.residual, self.heads, self.loglik, dict(self.meta))


def planted(*, n_examples: int = 120, n_responses: int = 3, hidden: int = 24, layers: tuple[int, ...] = (0, 1, 2, 3),
            signal_layers: tuple[int, ...] | None = None, strength: float | dict[int, float] = 3.0, noise: float = 1.0,
            views: tuple[str, ...] = ("plain", "yes", "no", "stim"), n_heads: int = 0, head_dim: int = 4,
            signal_heads: tuple[tuple[int, int], ...] = (), seed: int = 0, model: str = "synthetic-model",
            dataset: str = "planted", split: str = "train", direction: np.ndarray | None = None) -> Planted:
    """Sequences ordered by example then response; the best response sits at a random position.

    Every sequence shares a large per-example offset (as real prompts do). On signal layers the
    ``plain``/``stim`` activation of a preferred response is shifted by ``strength`` (or
    ``strength[layer]``, a dict giving each signal layer its own) along the
    planted direction; the ``yes``/``no`` views carry +-strength/2 along it with opposite signs
    (truth t = +1 for preferred, -1 otherwise), so their contrast h_yes - h_no holds t*strength.
    """
    rng = np.random.default_rng(seed)
    n = n_examples * n_responses
    example = np.repeat(np.arange(n_examples), n_responses).astype(np.int32)
    response = np.tile(np.arange(n_responses), n_examples).astype(np.int32)
    best = rng.integers(0, n_responses, n_examples)
    score = (response == best[example]).astype(np.float32)
    preferred = score == 1.0
    truth = np.where(preferred, 1.0, -1.0)
    if direction is None:
        direction = rng.standard_normal(hidden)
    direction = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
    if isinstance(strength, dict):
        signal_layers, strength_of = tuple(strength), dict(strength)
    else:
        signal_layers = tuple(layers if signal_layers is None else signal_layers)
        strength_of = {layer: strength for layer in signal_layers}

    residual: dict[str, dict[int, np.ndarray]] = {view: {} for view in views}
    for layer in layers:
        offset = 5.0 * rng.standard_normal((n_examples, hidden))[example]
        shared = offset + noise * rng.standard_normal((n, hidden))
        on = strength_of.get(layer, 0.0)
        for view in views:
            own = noise * rng.standard_normal((n, hidden))
            if view in ("yes", "no"):
                sign = 1.0 if view == "yes" else -1.0
                value = shared + own + sign * 0.5 * on * truth[:, None] * direction
            else:
                value = shared + own + on * preferred[:, None] * direction
            residual[view][layer] = value.astype(np.float32)

    heads: dict[str, dict[int, np.ndarray]] = {}
    if n_heads:
        head_direction = rng.standard_normal((n_heads, head_dim))
        head_direction /= np.linalg.norm(head_direction, axis=-1, keepdims=True)
        for view in views:
            heads[view] = {}
        for layer in (layer for layer in layers if layer >= 1):
            base = 3.0 * rng.standard_normal((n_examples, n_heads, head_dim))[example]
            for view in views:
                value = base + noise * rng.standard_normal((n, n_heads, head_dim))
                for signal_layer, head in signal_heads:
                    if signal_layer == layer:
                        shift = truth if view in ("yes", "no") else preferred.astype(np.float64)
                        sign = -0.5 if view == "no" else (0.5 if view == "yes" else 1.0)
                        value[:, head] += sign * strength_of.get(layer, 3.0) * shift[:, None] * head_direction[head]
                heads[view][layer] = value.astype(np.float32)

    loglik = (-20.0 + 2.0 * preferred + rng.standard_normal(n)).astype(np.float64)
    meta = {"model": model, "model_id": f"test/{model}", "dataset": dataset, "split": split,
            "hidden_size": hidden, "fingerprint": f"{dataset}-{seed}"}
    return Planted(example, response, score, direction, residual, heads, loglik, meta, signal_layers,
                   tuple(signal_heads))


def store_url(root: str | Path, model: str, dataset: str, split: str, view: str, extras: str = "") -> str:
    """The extraction layout; ``extras`` e.g. ".heads" or ".limit10.heads" (actstore/store/locations.py)."""
    return f"{root}/{model}/{dataset}/{split}{extras}.{view}.zarr"


def write_stores(data: Planted, root: str | Path, *, views: tuple[str, ...] | None = None,
                 with_heads: bool = True, block_size: int = 128, dtype: str = "float32",
                 extras: str = "") -> dict[str, str]:
    """Write each view as a complete store in the extraction layout; returns {view: url}."""
    urls = {}
    layers = tuple(sorted(next(iter(data.residual.values()))))
    n, hidden = len(data.example), int(data.meta["hidden_size"])
    for view in views or tuple(data.residual):
        head_arrays = data.heads.get(view) if with_heads else None
        n_heads = head_dim = None
        if head_arrays:
            _, n_heads, head_dim = next(iter(head_arrays.values())).shape
        layout = StoreLayout(n_sequences=n, layers=layers, hidden_size=hidden, dtype=dtype, block_size=block_size,
                             n_heads=n_heads, head_dim=head_dim, with_loglik=view == "plain", compressor=None)
        url = store_url(root, data.meta["model"], data.meta["dataset"], data.meta["split"], view, extras)
        store = create_store(url, layout, {"example": data.example, "response": data.response, "score": data.score},
                             {**data.meta, "view": view})
        residual = np.stack([data.residual[view][layer] for layer in layers])
        heads = np.stack([head_arrays[layer] for layer in layout.head_layers]) if head_arrays else None
        for block in range(layout.n_blocks):
            start, stop = layout.block_range(block)
            store.write_block(
                block, residual=residual[:, start:stop], final_norm=residual[-1, start:stop],
                n_tokens=np.full(stop - start, 10, np.int32), last_token=np.zeros(stop - start, np.int32),
                heads=None if heads is None else heads[:, start:stop],
                loglik=data.loglik[start:stop] if view == "plain" else None,
            )
        store.mark_complete()
        urls[view] = url
    return urls
