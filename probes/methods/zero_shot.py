"""zero-shot: the stored total log-likelihood of response + EOS given the prompt (nothing to fit)."""

from __future__ import annotations

from probes.methods.common import FitConfig
from probes.scorers import LoglikScorer
from probes.sources import FeatureSource


def fit(source: FeatureSource, layer: None, config: FitConfig) -> LoglikScorer:
    return LoglikScorer()
