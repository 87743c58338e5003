"""GENIES' "lat_stim" (really mass-mean, not PCA): mass-mean direction per residual layer, top-k
layers by validation accuracy on a train-internal split, score = mean cosine over the kept layers.
Distinct from ``lat`` (RepE's PCA).

- ``lat-stim`` (``LatStim()``): on the ``stim`` view (the stimulus-wrapped response): the paper's lat_stim_2.
- ``lat-stim-1`` (``LatStim(view="plain")``): the same on the ``plain`` view: the paper's lat_stim_1.
"""

from __future__ import annotations

from common import UserError
from probes.estimator import StoreProbe
from probes.methods.selection import TopSites, fit_top_sites
from probes.scorers import CosineScorer, Feature
from probes.sources import FeatureSource
from registry import Kind, MethodSpec

NAMES = {"stim": "lat-stim", "plain": "lat-stim-1"}


class LatStim(StoreProbe):
    def __init__(self, view: str = "stim", top_k: int = 16, val_fraction: float = 0.3, seed: int = 0):
        self.view = view
        self.top_k = top_k
        self.val_fraction = val_fraction
        self.seed = seed

    @property
    def method(self) -> str:
        if self.view not in NAMES:
            raise UserError(f"LatStim reads the stim or the plain view, not {self.view!r}")
        return NAMES[self.view]

    def _fit_scorer(self, source: FeatureSource) -> CosineScorer:
        return fit_top_sites(source, Feature(self.view), source.layers(self.view),
                             TopSites(self.top_k, self.val_fraction, self.seed))


SUMMARY = "mass-mean on the {} view, top-k layers, cosine scoring"
METHODS = (
    MethodSpec("lat-stim", Kind.PROBE, "GENIES lat_stim_2: " + SUMMARY.format("stim"), views=("stim",),
               paper_intervention="lat_stim_2", estimator=LatStim),
    MethodSpec("lat-stim-1", Kind.PROBE, "GENIES lat_stim_1: " + SUMMARY.format("plain"), views=("plain",),
               paper_intervention="lat_stim_1", estimator=LatStim, params=(("view", "plain"),)),
)
