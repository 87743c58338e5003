"""Head-wise GENIES variants: mms and cra on per-head attention outputs, top-k (16) heads.

Needs stores extracted with ``--site heads``. ``mms-heads`` reads the plain view; ``cra-heads``
reads the contrast a_yes - alpha * a_no of each head.
"""

from __future__ import annotations

from probes.estimator import StoreProbe
from probes.methods.selection import TopSites, fit_top_sites
from probes.scorers import CosineScorer, Feature
from probes.sources import FeatureSource
from registry import Kind, MethodSpec


class MMSHeads(StoreProbe):
    NAME = "mms-heads"

    def __init__(self, top_k: int = 16, val_fraction: float = 0.3, seed: int = 0):
        self.top_k = top_k
        self.val_fraction = val_fraction
        self.seed = seed

    def _fit_scorer(self, source: FeatureSource) -> CosineScorer:
        return fit_top_sites(source, Feature("plain", site="heads"), source.head_layers("plain"),
                             TopSites(self.top_k, self.val_fraction, self.seed))


class CRAHeads(StoreProbe):
    NAME = "cra-heads"

    def __init__(self, alpha: float = 1.0, top_k: int = 16, val_fraction: float = 0.3, seed: int = 0):
        self.alpha = alpha
        self.top_k = top_k
        self.val_fraction = val_fraction
        self.seed = seed

    def _fit_scorer(self, source: FeatureSource) -> CosineScorer:
        layers = sorted(set(source.head_layers("yes")) & set(source.head_layers("no")))
        return fit_top_sites(source, Feature("contrast", alpha=self.alpha, site="heads"), layers,
                             TopSites(self.top_k, self.val_fraction, self.seed))


METHODS = (
    MethodSpec("mms-heads", Kind.PROBE, "GENIES mms: mass-mean on per-head outputs, top-k heads, cosine scoring",
               views=("plain",), site="heads", paper_intervention="mms", estimator=MMSHeads),
    MethodSpec("cra-heads", Kind.PROBE, "GENIES cra: contrast of per-head outputs, top-k heads, cosine scoring",
               views=("yes", "no"), site="heads", paper_intervention="cra", estimator=CRAHeads),
)
