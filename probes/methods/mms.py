"""mms: mass-mean shift on the residual stream. direction = mean(h | preferred) - mean(h | dispreferred)."""

from __future__ import annotations

from probes.estimator import LayerProbe
from probes.methods.common import label_sign, mass_mean
from probes.scorers import Feature, LinearScorer
from probes.sources import FeatureSource
from registry import Kind, MethodSpec


def fit_mass_mean(probe: LayerProbe, source: FeatureSource, feature: Feature) -> LinearScorer:
    x, normalizer = probe._normalized(source, feature)
    z = normalizer(x)
    direction = mass_mean(z, source.labels.is_best)
    direction *= label_sign(z @ direction, source.labels)  # +1 unless the class means disagree with the pairs
    return LinearScorer(feature, probe.layer, normalizer, direction)


class MMS(LayerProbe):
    NAME = "mms"

    def _fit_scorer(self, source: FeatureSource) -> LinearScorer:
        return fit_mass_mean(self, source, Feature("plain"))


METHODS = (MethodSpec(
    "mms", Kind.PROBE, "mass-mean: mean(h | preferred) - mean(h | dispreferred)", views=("plain",), takes_layer=True,
    stands_in_for="mms", estimator=MMS,
    paper_note="residual stream at one chosen layer; the paper's mms uses the top-16 attention heads (our mms-heads)"),)
