"""Head-wise GENIES variants: mms and cra on per-head attention outputs, top-k (16) heads.

Needs stores extracted with ``--site heads``. ``mms-heads`` reads the plain view; ``cra-heads``
reads the contrast a_yes - alpha * a_no of each head.
"""

from __future__ import annotations

from probes.methods.common import FitConfig
from probes.methods.selection import fit_top_sites
from probes.scorers import CosineScorer, Feature
from probes.sources import FeatureSource


def fit_mms(source: FeatureSource, layer: None, config: FitConfig) -> CosineScorer:
    return fit_top_sites(source, Feature("plain", site="heads"), source.head_layers("plain"), config)


def fit_cra(source: FeatureSource, layer: None, config: FitConfig) -> CosineScorer:
    layers = sorted(set(source.head_layers("yes")) & set(source.head_layers("no")))
    return fit_top_sites(source, Feature("contrast", alpha=config.alpha, site="heads"), layers, config)
