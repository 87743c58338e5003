"""logreg: L2 logistic regression (scikit-learn) on paired differences of standardized activations.

The objective is that of every pair entering in both orders, (h_best - h_other, 1) and
(h_other - h_best, 0), with no intercept, so score(best) - score(other) is the fitted logit and
no label leaks through an orientation. Without an intercept a pair's loss is the same in either
order, so each pair enters once, in alternating orders (classes balanced, half the work), with
C doubled to keep the objective identical.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from probes.methods.common import FitConfig, pair_differences
from probes.normalize import Normalizer
from probes.scorers import Feature, LinearScorer
from probes.sources import FeatureSource


def alternate_orders(differences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs as (d, 1) and (-d, 0) alternately."""
    flip = np.arange(len(differences)) % 2 == 1
    return np.where(flip[:, None], -differences, differences), (~flip).astype(np.float64)


def fit(source: FeatureSource, layer: int, config: FitConfig) -> LinearScorer:
    feature = Feature("plain")
    x = feature.read(source, layer)
    normalizer = Normalizer.fit(x, config.normalize or "standardize")
    features, targets = alternate_orders(pair_differences(normalizer(x), source.labels))
    model = LogisticRegression(C=2 * config.logreg_c, fit_intercept=False, max_iter=1000)
    model.fit(features, targets)
    return LinearScorer(feature, layer, normalizer, model.coef_[0].astype(np.float32))
