"""lat: RepE's Linear Artificial Tomography. First principal component of paired differences.

Each training pair contributes h_best - h_other with a random (seeded) orientation, so the
differences carry no label; the differences are centred and the top principal component is
the direction. Only its sign comes from the training labels.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from probes.estimator import SeededLayerProbe
from probes.methods.common import label_sign, pair_differences
from probes.scorers import Feature, LinearScorer
from probes.sources import FeatureSource
from registry import Kind, MethodSpec


def first_principal_component(rows: np.ndarray) -> np.ndarray:
    centred = np.asarray(rows, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    # The d x d eigenproblem is cheaper than the SVD of (pairs x d). One BLAS thread: LAPACK's many
    # small steps make multi-threaded BLAS crawl (seconds instead of 0.1 s) when cores are shared.
    with threadpool_limits(1):
        _, vectors = np.linalg.eigh(centred.T @ centred)
    return vectors[:, -1].astype(np.float32)


class LAT(SeededLayerProbe):
    NAME = "lat"

    def _fit_scorer(self, source: FeatureSource) -> LinearScorer:
        x, normalizer = self._normalized(source)
        z = normalizer(x)
        differences = pair_differences(z, source.labels)
        orientation = np.random.default_rng(self.seed).choice([-1.0, 1.0], size=len(differences))
        direction = first_principal_component(differences * orientation[:, None].astype(np.float32))
        direction *= label_sign(z @ direction, source.labels)
        return LinearScorer(Feature("plain"), self.layer, normalizer, direction)


METHODS = (MethodSpec(
    "lat", Kind.PROBE, "RepE LAT: first PC of randomly oriented paired differences", views=("plain",), takes_layer=True,
    estimator=LAT,
    paper_note="RepE's PCA of paired differences; the paper has no PCA method (its \"LAT\" is lat-stim-1)"),)
