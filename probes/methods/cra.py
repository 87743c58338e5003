"""cra: contrastive representation arithmetic. c = h_yes - alpha * h_no, then the mass-mean recipe on c."""

from __future__ import annotations

from probes.estimator import LayerProbe
from probes.methods.mms import fit_mass_mean
from probes.scorers import Feature, LinearScorer
from probes.sources import FeatureSource
from registry import Kind, MethodSpec


class CRA(LayerProbe):
    NAME = "cra"

    def __init__(self, layer: int | None = None, alpha: float = 1.0, normalize: str = "center"):
        super().__init__(layer, normalize)
        self.alpha = alpha

    def _fit_scorer(self, source: FeatureSource) -> LinearScorer:
        return fit_mass_mean(self, source, Feature("contrast", alpha=self.alpha))


METHODS = (MethodSpec(
    "cra", Kind.PROBE, "contrastive representation arithmetic: mass-mean of h_yes - alpha h_no", views=("yes", "no"),
    takes_layer=True, stands_in_for="cra", estimator=CRA,
    paper_note="residual stream at one chosen layer; the paper's cra uses the top-16 attention heads (our cra-heads)"),)
