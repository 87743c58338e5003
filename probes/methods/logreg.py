"""logreg: L2 logistic regression (scikit-learn) on paired differences of standardized activations.

Each pair enters in both orders, (h_best - h_other, 1) and (h_other - h_best, 0), with no
intercept: the classes are balanced, the fit is deterministic, and score(best) - score(other)
is exactly the fitted logit.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from probes.methods.common import FitConfig, pair_differences
from probes.normalize import Normalizer
from probes.scorers import Feature, LinearScorer
from probes.sources import FeatureSource


def both_orders(differences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(differences)
    return np.concatenate([differences, -differences]), np.concatenate([np.ones(n), np.zeros(n)])


def fit(source: FeatureSource, layer: int, config: FitConfig) -> LinearScorer:
    feature = Feature("plain")
    x = feature.read(source, layer)
    normalizer = Normalizer.fit(x, config.normalize or "standardize")
    features, targets = both_orders(pair_differences(normalizer(x), source.labels))
    model = LogisticRegression(C=config.logreg_c, fit_intercept=False, max_iter=1000)
    model.fit(features, targets)
    return LinearScorer(feature, layer, normalizer, model.coef_[0].astype(np.float32))
