"""Fit a method on a training source and evaluate probes: the library calls behind `probes fit/eval`."""

from __future__ import annotations

from actstore.common import UserError, format_layers
from probes.methods import FitConfig, Method, get_method
from probes.metrics import ExampleOutcomes, Metrics, compute_metrics, example_outcomes, fit_temperature
from probes.probe import Probe, provenance
from probes.sources import FeatureSource


def check_layer(method: Method, source: FeatureSource, layer: int | None) -> None:
    if not method.per_layer:
        if layer is not None:
            raise UserError(f"{method.name} chooses its own layers/heads on a validation split; drop --layer")
        return
    if layer is None:
        raise UserError(f"{method.name} needs --layer")
    for view in method.views:
        layers = source.layers(view)
        if layer not in layers:
            raise UserError(f"layer {layer} is out of range for {source.name} ({view} view has layers "
                            f"{format_layers(layers)}; 0 = embeddings)")


def fit_probe(method_name: str, source: FeatureSource, layer: int | None = None,
              config: FitConfig = FitConfig()) -> Probe:
    """Fit on ``source`` (its training labels only).

    P(best) = sigmoid(margin / T): T = 1 where score differences are logits already (logreg,
    zero-shot: log-likelihood ratio), else a Platt temperature fitted on the training margins.
    """
    method = get_method(method_name)
    source.require(method.views, heads=method.heads, loglik=method.loglik)
    check_layer(method, source, layer)
    probe = Probe(method.name, method.fit(source, layer, config), 1.0, provenance(source),
                  {**config.as_dict(), "layer": layer})
    margins = probe.margins(source)  # also checks that the training scores are finite
    probe.temperature = 1.0 if method.natural_scale else fit_temperature(margins)
    return probe


def evaluate(probe: Probe, source: FeatureSource, *, calibration: str = "binned", n_bootstrap: int = 1000,
             seed: int = 0) -> Metrics:
    return evaluate_with_outcomes(probe, source, calibration=calibration, n_bootstrap=n_bootstrap, seed=seed)[0]


def evaluate_with_outcomes(probe: Probe, source: FeatureSource, *, calibration: str = "binned",
                           n_bootstrap: int = 1000, seed: int = 0) -> tuple[Metrics, ExampleOutcomes]:
    """The metrics, and each example's pairs and correct pairs (what later bootstraps resample)."""
    margins = probe.margins(source)
    pair_example = source.labels.pair_example
    metrics = compute_metrics(margins, temperature=probe.temperature, calibration=calibration,
                              n_bootstrap=n_bootstrap, seed=seed, pair_example=pair_example)
    return metrics, example_outcomes(margins, pair_example)
