"""lat-stim: GENIES' "lat_stim" (really mass-mean, not PCA) on the ``stim`` view.

Mass-mean direction per residual layer, top-k layers by validation accuracy on a
train-internal split, score = mean cosine over the kept layers. Distinct from ``lat``.
"""

from __future__ import annotations

from probes.methods.common import FitConfig
from probes.methods.selection import fit_top_sites
from probes.scorers import CosineScorer, Feature
from probes.sources import FeatureSource


def fit(source: FeatureSource, layer: None, config: FitConfig) -> CosineScorer:
    return fit_top_sites(source, Feature("stim"), source.layers("stim"), config)
