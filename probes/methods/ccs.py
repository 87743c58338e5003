"""ccs: Contrast-Consistent Search (Burns et al.) on the ``yes`` / ``no`` views.

p = sigmoid(w . x + b); loss = mean((p_yes - (1 - p_no))^2) + mean(min(p_yes, p_no)^2), plus a
small L2 penalty on w. Each view is normalized with its own TRAINING statistics. The fit never
sees a label. All restarts are optimised at once by L-BFGS on the sum of their losses (the
restarts share no parameters, so the sum's minimum is every restart's minimum; one
(d, restarts) matrix product serves them all), as EleutherAI's elk does with L-BFGS; the
restart with the lowest loss wins. Only the final sign comes from the training labels.

The products are small ((2n, d) x (d, restarts), a few hundred times per fit), so the fit runs
on one BLAS thread: more threads only add synchronisation, and on a busy machine their spinning
made each fit 5-20x slower with bitwise the same result (benchmarks/probe_sweep.py --ccs).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from threadpoolctl import threadpool_limits

from common import check_number
from probes.estimator import LayerProbe
from probes.methods.common import label_sign
from probes.normalize import Normalizer
from probes.scorers import CCSScorer
from probes.sources import FeatureSource
from registry import Kind, MethodSpec

BLAS_THREADS: int | None = 1  # None: the library default (the benchmark's "before")


def ccs_losses(p_yes: np.ndarray, p_no: np.ndarray) -> np.ndarray:
    """CCS loss per column (restart) of probabilities shaped (n, restarts)."""
    return ((p_yes + p_no - 1.0) ** 2).mean(axis=0) + (np.minimum(p_yes, p_no) ** 2).mean(axis=0)


def _objective(x_yes: np.ndarray, x_no: np.ndarray, restarts: int, l2: float):
    n, d = x_yes.shape
    stacked = np.concatenate([x_yes, x_no])  # one product per direction serves both views and all restarts

    def value_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weight = theta[: d * restarts].reshape(d, restarts).astype(np.float32)
        bias = theta[d * restarts:].astype(np.float32)
        p = expit(stacked @ weight + bias)
        p_yes, p_no = p[:n], p[n:]
        inconsistency, smaller = p_yes + p_no - 1.0, np.minimum(p_yes, p_no)
        # d loss / d logit, for each view: the min term only flows into the smaller probability.
        grad = np.concatenate([2 * inconsistency + 2 * smaller * (p_yes <= p_no),
                               2 * inconsistency + 2 * smaller * (p_no < p_yes)]) * (p * (1 - p) / n)
        loss = ccs_losses(p_yes, p_no).sum() + 0.5 * l2 * float((weight.astype(np.float64) ** 2).sum())
        grad_weight = stacked.T @ grad + l2 * weight
        return float(loss), np.concatenate([grad_weight.ravel(), grad.sum(axis=0)]).astype(np.float64)

    return value_and_gradient


def train_ccs(x_yes: np.ndarray, x_no: np.ndarray, *, seed: int = 0, restarts: int = 10, max_iter: int = 100,
              l2: float = 1e-3) -> tuple[np.ndarray, float, float]:
    """Unsupervised CCS fit on normalized activations; (weight, bias, loss) of the best restart."""
    check_number("CCS restarts", restarts, minimum=1, above=False)
    check_number("CCS max_iter", max_iter, minimum=1, above=False)
    check_number("CCS l2", l2, above=False)
    x_yes = np.ascontiguousarray(x_yes, dtype=np.float32)
    x_no = np.ascontiguousarray(x_no, dtype=np.float32)
    d = x_yes.shape[1]
    bound = 1.0 / np.sqrt(d)  # torch.nn.Linear's default initialisation range
    start = np.random.default_rng(seed).uniform(-bound, bound, d * restarts + restarts)
    with threadpool_limits(BLAS_THREADS):
        result = minimize(_objective(x_yes, x_no, restarts, l2), start, jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter, "ftol": 1e-7})
        weight = result.x[: d * restarts].reshape(d, restarts).astype(np.float32)
        bias = result.x[d * restarts:].astype(np.float32)
        losses = ccs_losses(expit(x_yes @ weight + bias), expit(x_no @ weight + bias))
    best = int(np.argmin(losses))
    return weight[:, best].copy(), float(bias[best]), float(losses[best])


class CCS(LayerProbe):
    """``restarts`` initialisations optimised together for at most ``max_iter`` L-BFGS iterations; ``l2`` keeps
    the weights finite when the contrast pairs are separable."""

    NAME = "ccs"

    def __init__(self, layer: int | None = None, normalize: str = "standardize", seed: int = 0, restarts: int = 10,
                 max_iter: int = 100, l2: float = 1e-3):
        super().__init__(layer, normalize)
        self.seed = seed
        self.restarts = restarts
        self.max_iter = max_iter
        self.l2 = l2

    def _fit_scorer(self, source: FeatureSource) -> CCSScorer:
        raw_yes, raw_no = source.residual("yes", self.layer), source.residual("no", self.layer)
        normalize_yes, normalize_no = Normalizer.fit(raw_yes, self.normalize), Normalizer.fit(raw_no, self.normalize)
        weight, bias, _ = train_ccs(normalize_yes(raw_yes), normalize_no(raw_no), seed=self.seed,
                                    restarts=self.restarts, max_iter=self.max_iter, l2=self.l2)
        scorer = CCSScorer(self.layer, normalize_yes, normalize_no, weight, bias, 1.0)
        return replace(scorer, sign=label_sign(scorer.score(source), source.labels))


# Not the paper's ccs: that one scores each response alone and chooses its sign on the target; ours scores pairs
# with the sign its training labels give (per-shift r between the two on the 15 GENIES shifts: -0.38). It stands
# in for it in `--methods paper`, and the paper's numbers are never put beside it.
METHODS = (MethodSpec("ccs", Kind.PROBE, "contrast-consistent search (unsupervised; sign from train labels)",
                      views=("yes", "no"), takes_layer=True, stands_in_for="ccs", estimator=CCS,
                      paper_note="pairs scored, sign from the training labels; the paper's ccs scores each response "
                                 "and chooses its sign on the target (per-shift r between the two: -0.38)"),)
