"""mms: mass-mean shift on the residual stream. direction = mean(h | preferred) - mean(h | dispreferred)."""

from __future__ import annotations

from probes.methods.common import FitConfig, label_sign, mass_mean
from probes.normalize import Normalizer
from probes.scorers import Feature, LinearScorer
from probes.sources import FeatureSource


def fit_mass_mean(source: FeatureSource, layer: int, config: FitConfig, feature: Feature) -> LinearScorer:
    x = feature.read(source, layer)
    normalizer = Normalizer.fit(x, config.normalize or "center")
    z = normalizer(x)
    direction = mass_mean(z, source.labels.is_best)
    direction *= label_sign(z @ direction, source.labels)  # +1 unless the class means disagree with the pairs
    return LinearScorer(feature, layer, normalizer, direction)


def fit(source: FeatureSource, layer: int, config: FitConfig) -> LinearScorer:
    return fit_mass_mean(source, layer, config, Feature("plain"))
