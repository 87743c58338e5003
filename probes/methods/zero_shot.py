"""zero-shot: the stored total log-likelihood of response + EOS given the prompt (nothing to fit)."""

from __future__ import annotations

from probes.estimator import StoreProbe
from probes.scorers import LoglikScorer
from probes.sources import FeatureSource
from registry import Kind, MethodSpec


class ZeroShot(StoreProbe):
    NAME = "zero-shot"
    natural_scale = True  # score differences are log-likelihood ratios

    def __init__(self):
        pass

    def _fit_scorer(self, source: FeatureSource) -> LoglikScorer:
        return LoglikScorer()


METHODS = (MethodSpec("zero-shot", Kind.STORE_BASELINE, "total log-likelihood of response + EOS given the prompt",
                      views=("plain",), site="loglik", base_model_baseline=True, paper_intervention="zero_shot",
                      estimator=ZeroShot),)
