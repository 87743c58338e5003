"""The fitted math of a probe: activations -> one score per sequence. Every method yields one of these.

Each scorer serializes to (config: JSON-able dict, tensors: dict of arrays) and back, which is
what probe files hold (no pickles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from probes.normalize import Normalizer
from probes.sources import FeatureSource

SITES = ("residual", "heads")


def activation_shape(meta: dict, site: str, *, one_head: bool = False) -> tuple[int, ...] | None:
    """One sequence's activations at one site (a layer, or one head) as ``meta`` records them (a store's,
    or a probe's ``trained_on``); None where it does not say."""
    if site != "heads":
        return (int(meta["hidden_size"]),) if meta.get("hidden_size") else None
    if not meta.get("head_dim") or not (one_head or meta.get("n_heads")):
        return None
    return (int(meta["head_dim"]),) if one_head else (int(meta["n_heads"]), int(meta["head_dim"]))


def shape_mismatch(tensors: dict[str, np.ndarray]) -> str | None:
    """Tensors that must all have one shape: which one differs from the first, or None."""
    (first, want), *others = tensors.items()
    for name, value in others:
        if value.shape != want.shape:
            return f"tensor {name!r} has shape {value.shape}, but {first!r} has {want.shape}"
    return None


def width_mismatch(have: tuple[int, ...], site: str, meta: dict, *, one_head: bool = False) -> str | None:
    want = activation_shape(meta, site, one_head=one_head)
    if want is None or tuple(have) == want:
        return None
    what = "one head's" if one_head else f"the {site}"
    return f"its tensors read {what} activations of shape {tuple(have)}, but the model's are {want}"


@dataclass(frozen=True)
class Feature:
    """What a probe reads: one view, or the CRA contrast h_yes - alpha * h_no; residual stream or heads."""

    view: str = "plain"  # a view name, or "contrast"
    alpha: float = 1.0  # contrast only
    site: str = "residual"

    @property
    def views(self) -> tuple[str, ...]:
        return ("yes", "no") if self.view == "contrast" else (self.view,)

    def read(self, source: FeatureSource, layer: int) -> np.ndarray:
        get = source.heads if self.site == "heads" else source.residual
        if self.view == "contrast":
            return get("yes", layer) - np.float32(self.alpha) * get("no", layer)
        return get(self.view, layer)

    def config(self) -> dict:
        return {"view": self.view, "alpha": self.alpha, "site": self.site}


@dataclass(frozen=True)
class Needs:
    views: tuple[str, ...]
    layers: tuple[int, ...] = ()
    heads: bool = False
    loglik: bool = False


@dataclass(frozen=True, eq=False)
class LinearScorer:
    """score = normalize(x) . direction at one layer (mms, lat, cra, logreg, random)."""

    feature: Feature
    layer: int
    normalizer: Normalizer
    direction: np.ndarray
    kind = "linear"
    CONFIG_KEYS = ("feature", "layer")
    TENSOR_NAMES = ("direction", "mean", "scale")

    def needs(self) -> Needs:
        return Needs(self.feature.views, (self.layer,), heads=self.feature.site == "heads")

    def describe(self) -> str:
        return f"layer {self.layer}"

    def score(self, source: FeatureSource) -> np.ndarray:
        x = self.normalizer(self.feature.read(source, self.layer))
        return x.reshape(len(x), -1) @ self.direction.ravel()

    def raw_direction(self) -> np.ndarray:
        return self.normalizer.raw_direction(self.direction.reshape(self.normalizer.scale.shape)).ravel()

    def shape_problem(self) -> str | None:
        return shape_mismatch({"mean": self.normalizer.mean, "scale": self.normalizer.scale, "direction": self.direction})

    def width_problem(self, meta: dict) -> str | None:
        return width_mismatch(self.normalizer.mean.shape, self.feature.site, meta)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return ({"feature": self.feature.config(), "layer": self.layer},
                {"direction": self.direction, **self.normalizer.tensors("")})

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, np.ndarray]) -> "LinearScorer":
        return cls(Feature(**config["feature"]), config["layer"], Normalizer.from_tensors(tensors, ""),
                   np.asarray(tensors["direction"]))


@dataclass(frozen=True, eq=False)
class CCSScorer:
    """score = sign * (credence - 1/2), credence = (p(yes) + 1 - p(no)) / 2, p = sigmoid(w . x + b)."""

    layer: int
    normalize_yes: Normalizer
    normalize_no: Normalizer
    weight: np.ndarray
    bias: float
    sign: float
    kind = "ccs"
    CONFIG_KEYS = ("layer", "bias", "sign")
    TENSOR_NAMES = ("weight", "yes_mean", "yes_scale", "no_mean", "no_scale")

    def needs(self) -> Needs:
        return Needs(("yes", "no"), (self.layer,))

    def describe(self) -> str:
        return f"layer {self.layer}"

    def probabilities(self, source: FeatureSource) -> tuple[np.ndarray, np.ndarray]:
        p_yes = expit(self.normalize_yes(source.residual("yes", self.layer)) @ self.weight + self.bias)
        p_no = expit(self.normalize_no(source.residual("no", self.layer)) @ self.weight + self.bias)
        return p_yes, p_no

    def score(self, source: FeatureSource) -> np.ndarray:
        p_yes, p_no = self.probabilities(source)
        return self.sign * (0.5 * (p_yes + 1.0 - p_no) - 0.5)

    def raw_direction(self) -> np.ndarray:
        """Direction of the contrast the probe reads, in raw space (for a planted-direction check)."""
        return self.sign * self.normalize_yes.raw_direction(self.weight)

    def shape_problem(self) -> str | None:
        return shape_mismatch({"weight": self.weight, "yes_mean": self.normalize_yes.mean,
                               "yes_scale": self.normalize_yes.scale, "no_mean": self.normalize_no.mean,
                               "no_scale": self.normalize_no.scale})

    def width_problem(self, meta: dict) -> str | None:
        return width_mismatch(self.weight.shape, "residual", meta)

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return ({"layer": self.layer, "bias": self.bias, "sign": self.sign},
                {"weight": self.weight, **self.normalize_yes.tensors("yes_"), **self.normalize_no.tensors("no_")})

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, np.ndarray]) -> "CCSScorer":
        return cls(config["layer"], Normalizer.from_tensors(tensors, "yes_"), Normalizer.from_tensors(tensors, "no_"),
                   np.asarray(tensors["weight"]), float(config["bias"]), float(config["sign"]))


@dataclass(frozen=True, eq=False)
class CosineScorer:
    """score = sign * mean over sites of cos(x_site - mean_site, direction_site).

    The GENIES multi-site recipe (lat-stim over top-k layers; mms/cra over top-k heads). A site
    is a layer (residual) or a (layer, head). The reference takes the cosine of a pair's
    *difference*; a per-sequence score needs the cosine of each (train-centred) activation.
    """

    feature: Feature
    sites: list[tuple[int, int | None]]
    means: np.ndarray  # (n_sites, dim)
    directions: np.ndarray  # (n_sites, dim)
    sign: float = 1.0
    kind = "cosine"
    CONFIG_KEYS = ("feature", "sites", "sign")
    TENSOR_NAMES = ("means", "directions")

    def needs(self) -> Needs:
        return Needs(self.feature.views, tuple(sorted({layer for layer, _ in self.sites})),
                     heads=self.feature.site == "heads")

    def describe(self) -> str:
        if self.feature.site == "heads":
            return "heads " + " ".join(f"{layer}.{head}" for layer, head in self.sites) + " (layer.head)"
        return "layers " + ",".join(str(layer) for layer, _ in self.sites)

    def score(self, source: FeatureSource) -> np.ndarray:
        total = 0.0
        for layer in sorted({layer for layer, _ in self.sites}):
            x = self.feature.read(source, layer)
            for i, (site_layer, head) in enumerate(self.sites):
                if site_layer == layer:
                    total = total + cosine_scores(x if head is None else x[:, head], self.means[i], self.directions[i])
        return self.sign * total / len(self.sites)

    def shape_problem(self) -> str | None:
        if self.means.ndim != 2 or self.means.shape[0] != len(self.sites):
            return f"tensor 'means' has shape {self.means.shape}, but the probe has {len(self.sites)} sites"
        return shape_mismatch({"means": self.means, "directions": self.directions})

    def width_problem(self, meta: dict) -> str | None:
        heads = self.feature.site == "heads"
        problem = width_mismatch(self.means.shape[1:], self.feature.site, meta, one_head=heads)
        n_heads = meta.get("n_heads")
        if problem is None and heads and n_heads and any(head >= n_heads for _, head in self.sites):
            problem = f"it reads head {max(head for _, head in self.sites)}, but the model has {n_heads} heads"
        return problem

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return ({"feature": self.feature.config(), "sites": [[layer, head] for layer, head in self.sites],
                 "sign": self.sign}, {"means": self.means, "directions": self.directions})

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, np.ndarray]) -> "CosineScorer":
        sites = [(int(layer), None if head is None else int(head)) for layer, head in config["sites"]]
        return cls(Feature(**config["feature"]), sites, np.asarray(tensors["means"]), np.asarray(tensors["directions"]),
                   float(config["sign"]))


def cosine_scores(x: np.ndarray, mean: np.ndarray, direction: np.ndarray) -> np.ndarray:
    centred = np.asarray(x, dtype=np.float32) - mean
    norms = np.linalg.norm(centred, axis=-1) * np.linalg.norm(direction)
    return (centred @ direction) / np.maximum(norms, 1e-12)


@dataclass(frozen=True, eq=False)
class LoglikScorer:
    """score = total log-likelihood of response + EOS given the prompt (zero-shot)."""

    kind = "loglik"
    CONFIG_KEYS = ()
    TENSOR_NAMES = ()

    def needs(self) -> Needs:
        return Needs(("plain",), loglik=True)

    def describe(self) -> str:
        return "stored log-likelihoods"

    def shape_problem(self) -> str | None:
        return None

    def width_problem(self, meta: dict) -> str | None:
        return None

    def score(self, source: FeatureSource) -> np.ndarray:
        return source.loglik()

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {}, {}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, np.ndarray]) -> "LoglikScorer":
        return cls()


SCORERS = {cls.kind: cls for cls in (LinearScorer, CCSScorer, CosineScorer, LoglikScorer)}
Scorer = LinearScorer | CCSScorer | CosineScorer | LoglikScorer
