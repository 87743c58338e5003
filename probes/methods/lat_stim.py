"""GENIES' "lat_stim" (really mass-mean, not PCA): mass-mean direction per residual layer, top-k
layers by validation accuracy on a train-internal split, score = mean cosine over the kept layers.
Distinct from ``lat`` (RepE's PCA).

- ``lat-stim``: on the ``stim`` view (the stimulus-wrapped response): the paper's lat_stim_2.
- ``lat-stim-1``: the same on the ``plain`` view: the paper's lat_stim_1.
"""

from __future__ import annotations

from probes.methods.common import FitConfig
from probes.methods.selection import fit_top_sites
from probes.scorers import CosineScorer, Feature
from probes.sources import FeatureSource


def fit(source: FeatureSource, layer: None, config: FitConfig) -> CosineScorer:
    return fit_top_sites(source, Feature("stim"), source.layers("stim"), config)


def fit_plain(source: FeatureSource, layer: None, config: FitConfig) -> CosineScorer:
    return fit_top_sites(source, Feature("plain"), source.layers("plain"), config)
