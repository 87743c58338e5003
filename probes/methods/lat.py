"""lat: RepE's Linear Artificial Tomography. First principal component of paired differences.

Each training pair contributes h_best - h_other with a random (seeded) orientation, so the
differences carry no label; the differences are centred and the top principal component is
the direction. Only its sign comes from the training labels.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from probes.methods.common import FitConfig, label_sign, pair_differences
from probes.normalize import Normalizer
from probes.scorers import Feature, LinearScorer
from probes.sources import FeatureSource


def first_principal_component(rows: np.ndarray) -> np.ndarray:
    centred = np.asarray(rows, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    # The d x d eigenproblem is cheaper than the SVD of (pairs x d). One BLAS thread: LAPACK's many
    # small steps make multi-threaded BLAS crawl (seconds instead of 0.1 s) when cores are shared.
    with threadpool_limits(1):
        _, vectors = np.linalg.eigh(centred.T @ centred)
    return vectors[:, -1].astype(np.float32)


def fit(source: FeatureSource, layer: int, config: FitConfig) -> LinearScorer:
    feature = Feature("plain")
    x = feature.read(source, layer)
    normalizer = Normalizer.fit(x, config.normalize or "center")
    z = normalizer(x)
    differences = pair_differences(z, source.labels)
    orientation = np.random.default_rng(config.seed).choice([-1.0, 1.0], size=len(differences))
    direction = first_principal_component(differences * orientation[:, None].astype(np.float32))
    direction *= label_sign(z @ direction, source.labels)
    return LinearScorer(feature, layer, normalizer, direction)
