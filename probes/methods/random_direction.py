"""random: a seeded random direction (on train-centred activations); the baseline every probe must beat.

Its sign is NOT taken from the labels: a label-oriented random direction would beat chance.
"""

from __future__ import annotations

import numpy as np

from probes.estimator import SeededLayerProbe
from probes.scorers import Feature, LinearScorer
from probes.sources import FeatureSource
from registry import Kind, MethodSpec


class RandomDirection(SeededLayerProbe):
    NAME = "random"

    def _fit_scorer(self, source: FeatureSource) -> LinearScorer:
        x, normalizer = self._normalized(source)
        direction = np.random.default_rng(self.seed).standard_normal(x.shape[1]).astype(np.float32)
        return LinearScorer(Feature("plain"), self.layer, normalizer, direction)


# A chance baseline never has its layer chosen on labels (the luckiest of many random directions
# beats chance): a sweep's "best" layer for it is the middle swept layer; it is never the TTC.
METHODS = (MethodSpec("random", Kind.PROBE, "a seeded random direction (baseline)", views=("plain",), takes_layer=True,
                      chance_baseline=True, estimator=RandomDirection,
                      paper_note="chance baseline; no counterpart in the paper"),)
