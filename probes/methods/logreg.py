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

from probes.estimator import LayerProbe
from probes.methods.common import pair_differences
from probes.scorers import Feature, LinearScorer
from probes.sources import FeatureSource
from registry import Kind, MethodSpec


def alternate_orders(differences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs as (d, 1) and (-d, 0) alternately."""
    flip = np.arange(len(differences)) % 2 == 1
    return np.where(flip[:, None], -differences, differences), (~flip).astype(np.float64)


class LogReg(LayerProbe):
    NAME = "logreg"
    natural_scale = True  # score differences are the fitted logits

    def __init__(self, layer: int | None = None, C: float = 1.0, normalize: str = "standardize"):  # noqa: N803 - sklearn's name
        super().__init__(layer, normalize)
        self.C = C

    def _fit_scorer(self, source: FeatureSource) -> LinearScorer:
        x, normalizer = self._normalized(source)
        features, targets = alternate_orders(pair_differences(normalizer(x), source.labels))
        model = LogisticRegression(C=2 * self.C, fit_intercept=False, max_iter=1000)
        model.fit(features, targets)
        return LinearScorer(Feature("plain"), self.layer, normalizer, model.coef_[0].astype(np.float32))


METHODS = (MethodSpec("logreg", Kind.PROBE, "L2 logistic regression on paired differences (scikit-learn)",
                      views=("plain",), takes_layer=True, estimator=LogReg, paper_note="no counterpart in the paper"),)
