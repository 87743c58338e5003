"""random: a seeded random direction (on train-centred activations); the baseline every probe must beat.

Its sign is NOT taken from the labels: a label-oriented random direction would beat chance.
"""

from __future__ import annotations

import numpy as np

from probes.methods.common import FitConfig
from probes.normalize import Normalizer
from probes.scorers import Feature, LinearScorer
from probes.sources import FeatureSource


def fit(source: FeatureSource, layer: int, config: FitConfig) -> LinearScorer:
    feature = Feature("plain")
    x = feature.read(source, layer)
    normalizer = Normalizer.fit(x, config.normalize or "center")
    direction = np.random.default_rng(config.seed).standard_normal(x.shape[1]).astype(np.float32)
    return LinearScorer(feature, layer, normalizer, direction)
