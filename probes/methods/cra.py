"""cra: contrastive representation arithmetic. c = h_yes - alpha * h_no, then the mass-mean recipe on c."""

from __future__ import annotations

from probes.methods.common import FitConfig
from probes.methods.mms import fit_mass_mean
from probes.scorers import Feature, LinearScorer
from probes.sources import FeatureSource


def fit(source: FeatureSource, layer: int, config: FitConfig) -> LinearScorer:
    return fit_mass_mean(source, layer, config, Feature("contrast", alpha=config.alpha))
