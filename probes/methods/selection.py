"""The GENIES multi-site recipe: mass-mean direction per site (a layer, or a layer's head), keep the
top-k sites by accuracy on a train-internal validation split, score by mean cosine over them.

Sites are ranked by the pairwise validation accuracy of the very scorer that is kept (a
mass-mean direction fitted on the other 70% of the training examples), not by a separate
logistic probe as in the reference. The kept directions are then refitted on all training data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from probes.labels import split_by_example
from probes.methods.common import label_sign, mass_mean, pair_accuracy_per_column
from probes.scorers import CosineScorer, Feature
from probes.sources import FeatureSource

Site = tuple[int, int | None]  # (layer, head); head None = the residual stream


@dataclass(frozen=True)
class TopSites:
    """How many sites to keep, and the train-internal validation split that ranks them."""

    top_k: int = 16
    val_fraction: float = 0.3
    seed: int = 0


def _by_site(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, 1, d); (n, heads, head_dim) stays."""
    return x[:, None, :] if x.ndim == 2 else x


def site_cosines(x: np.ndarray, means: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """cos(x_s - mean_s, direction_s) for every sequence and site: (n, sites, dim) -> (n, sites)."""
    centred = x - means
    dots = np.einsum("nsd,sd->ns", centred, directions)
    norms = np.linalg.norm(centred, axis=-1) * np.linalg.norm(directions, axis=-1)
    return dots / np.maximum(norms, 1e-12)


def rank_sites(source: FeatureSource, feature: Feature, layers: list[int], config: TopSites) -> list[tuple[float, Site]]:
    """(validation accuracy, site) for every site of ``layers``, best first."""
    labels = source.labels
    fit_rows, val_rows = split_by_example(labels, config.val_fraction, config.seed)
    fit_best, val_labels = labels.is_best[fit_rows], labels.subset(val_rows)
    ranked: list[tuple[float, Site]] = []
    for layer in layers:
        x = feature.read(source, layer)
        per_site = _by_site(x)
        means = per_site[fit_rows].mean(axis=0)
        directions = mass_mean(per_site[fit_rows], fit_best)
        accuracy = pair_accuracy_per_column(site_cosines(per_site[val_rows], means, directions), val_labels)
        ranked += [(float(a), (layer, None if x.ndim == 2 else head)) for head, a in enumerate(accuracy)]
    ranked.sort(key=lambda item: -item[0])  # stable: equal accuracy keeps layer, head order
    return ranked


def fit_top_sites(source: FeatureSource, feature: Feature, layers: list[int], config: TopSites) -> CosineScorer:
    if not layers:
        raise ValueError("no layers to choose from")
    sites = sorted(site for _, site in rank_sites(source, feature, layers, config)[: config.top_k])
    means, directions = [], []
    for layer in sorted({layer for layer, _ in sites}):
        per_site = _by_site(feature.read(source, layer))
        for site_layer, head in sites:
            if site_layer == layer:
                column = per_site[:, 0 if head is None else head]
                means.append(column.mean(axis=0))
                directions.append(mass_mean(column, source.labels.is_best))
    scorer = CosineScorer(feature, sites, np.stack(means).astype(np.float32), np.stack(directions).astype(np.float32))
    return replace(scorer, sign=label_sign(scorer.score(source), source.labels))
