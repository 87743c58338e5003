"""Probes as scikit-learn estimators, on arrays (``MMS().fit(X, y, groups=g).score(X2, y2, g2) -> float``,
the contract in probes.arrays) or on stores (``LAT(layer=20).fit(train).score(test) -> Metrics``).

``__init__`` only stores parameters (so ``get_params``, ``set_params`` and ``sklearn.base.clone``
work); ``fit`` fits the scorer and its temperature in one step and keeps them as one frozen
``FittedProbe`` (fitting again replaces it). Setting a parameter of a fitted probe raises (``clone`` it).
Every store ``train`` / ``source`` is a store path or URL, an opened store, a list of one split's view
stores (paths, URLs or opened stores), or a ``FeatureSource``.

P(best) = sigmoid(margin / T): T = 1 where score differences are logits already (logreg,
zero-shot: a log-likelihood ratio), else a Platt temperature fitted on the training margins.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator

import registry
from common import UserError, format_layers
from common.metrics import (ExampleOutcomes, Metrics, compute_metrics, example_outcomes, fit_degeneracy, fit_temperature,
                            pair_correctness)
from probes.arrays import ArrayInputError, NotFitted, RowArrays, as_matrix, best_in_group, is_arrays, labels_of
from probes.constant_layers import constant_layer_message, is_constant
from probes.normalize import Normalizer
from probes.probe import FittedProbe, provenance, read_fitted, save_fitted
from probes.scorers import Feature
from probes.sources import FeatureSource, StoreSource


def as_source(source) -> FeatureSource:
    """A store path or URL, an opened store, a list of one split's view stores, or a source as it is."""
    if isinstance(source, FeatureSource):
        return source
    if isinstance(source, (str, Path)) or hasattr(source, "meta") and hasattr(source, "url"):
        source = [source]
    if isinstance(source, (list, tuple)) and source:
        return StoreSource([str(getattr(item, "url", item)) for item in source])
    raise UserError(f"cannot read activations from {type(source).__name__} {source!r}: give a store path or URL, "
                    "an opened store, or a list of one split's view stores")


DEGENERATE_NOTE = "degenerate"  # probe notes: why the fit is degenerate (common.metrics.fit_degeneracy)


class StoreProbe(BaseEstimator):
    """What every method fitted from stores shares; a subclass names its method and fits its scorer."""

    NAME = ""
    natural_scale = False  # score differences are logits already: temperature 1, no Platt fit

    @property
    def method(self) -> str:
        return self.NAME

    @property
    def spec(self) -> registry.MethodSpec:
        return registry.get(self.method)

    def _fit_scorer(self, source: FeatureSource):
        raise NotImplementedError

    def __setattr__(self, name, value):
        if getattr(self, "fitted_", None) is not None and not name.startswith("_"):
            raise UserError(f"a fitted {self.method} probe is immutable; clone it (sklearn.base.clone) to change {name}")
        super().__setattr__(name, value)

    # With scikit-learn's metadata routing on, ``groups`` reaches fit and score without being asked for.
    __metadata_request__fit = {"groups": True}
    __metadata_request__score = {"groups": True}

    def fit(self, X, y=None, groups=None) -> "StoreProbe":  # noqa: N803 - scikit-learn's names
        """Fit on arrays ``X, y, groups`` (probes.arrays has the contract) or on a training store:
        a path or URL, an opened store, a list of one split's view stores, or a source (the stores hold
        the labels: no ``y``)."""
        object.__setattr__(self, "fitted_", None)  # fitting again starts afresh, as scikit-learn's contract says
        if is_arrays(X):
            x = self._matrix(X, fitting=True)
            source = RowArrays(x, self._array_views(), labels_of(y, groups, len(x), self.method))
            object.__setattr__(self, "n_features_in_", x.shape[-1])
        else:
            source = as_source(X)
        spec = self.spec
        source.require(self._array_views() if getattr(source, "layer_free", False) else spec.views,
                       heads=spec.heads, loglik=spec.loglik)
        self._check_layer(source)
        draft = FittedProbe(self.method, self._fit_scorer(source), 1.0, provenance(source), self.get_params())
        margins = draft.margins(source)  # also checks that the training scores are finite
        temperature = 1.0 if self.natural_scale else fit_temperature(margins)
        # Noted only when it is (other probe files keep their bytes); a natural-scale score has nothing fitted.
        degenerate = None if self.natural_scale else fit_degeneracy(margins)
        notes = {DEGENERATE_NOTE: degenerate} if degenerate else {}
        object.__setattr__(self, "fitted_", replace(draft, temperature=temperature, notes={**draft.notes, **notes}))
        return self

    def _array_views(self) -> tuple[str, ...]:
        return ("loglik",) if self.spec.loglik else self.spec.views

    def _matrix(self, X, fitting: bool = False) -> np.ndarray:  # noqa: N803
        """``X`` checked; scored, of the width it was fitted on."""
        x = as_matrix(X, multi_site=not self.spec.takes_layer and not self.spec.loglik,
                      n_views=len(self._array_views()), method=self.method)
        width = getattr(self, "n_features_in_", None)
        if not fitting and width is not None and x.shape[-1] != width:
            raise ArrayInputError(f"{self.method}: X has width {x.shape[-1]}, but the probe was fitted on width {width}")
        return x

    def _rows(self, X, y=None, groups=None) -> FeatureSource:  # noqa: N803
        """Arrays to score (with labels where ``y`` is given), or a store as_source takes."""
        if not is_arrays(X):
            return as_source(X)
        self.fitted  # a probe that is not fitted says so before the arrays are checked
        x = self._matrix(X)
        labels = None if y is None else labels_of(y, groups, len(x), self.method)
        return RowArrays(x, self._array_views(), labels)

    def _check_layer(self, source: FeatureSource) -> None:
        """Per-layer probes check their layer (LayerProbe); the others choose their own sites."""

    @property
    def fitted(self) -> FittedProbe:
        fitted = getattr(self, "fitted_", None)
        if fitted is None:
            raise NotFitted(f"this {self.method} probe is not fitted yet: call fit first")
        return fitted

    @property
    def scorer_(self):
        return self.fitted.scorer

    @property
    def temperature_(self) -> float:
        return self.fitted.temperature

    @property
    def trained_on_(self) -> dict:
        return self.fitted.trained_on

    @property
    def notes_(self) -> dict:
        return dict(self.fitted.notes)

    def decision_function(self, X) -> np.ndarray:  # noqa: N803
        """One score per row or sequence (higher: more preferred)."""
        return self.fitted.score(self._rows(X))

    def predict(self, X, groups=None) -> np.ndarray:  # noqa: N803
        """Per row: 1 for the response scored highest among its example's (``groups``), else 0."""
        self.fitted  # a probe that is not fitted says so first
        if groups is None:
            raise ArrayInputError(f"{self.method}: predict needs groups (each row's example id) to know "
                                  "which responses compete")
        return best_in_group(self.decision_function(X), groups)

    def margins(self, source) -> np.ndarray:
        return self.fitted.margins(as_source(source))

    def score(self, X, y=None, groups=None, *, calibration: str = "binned", n_bootstrap: int = 1000,  # noqa: N803
              seed: int = 0):
        """On arrays: the pair accuracy (a float, ties half), what scikit-learn's model selection maximizes.
        On a store: every metric, with intervals (Metrics)."""
        if is_arrays(X):
            source = self._rows(X, y, groups)
            if source.labels is None:
                raise ArrayInputError(f"{self.method}: scoring arrays needs y (1.0 preferred, 0.0 other)")
            return float(pair_correctness(source.labels.margins(self.fitted.score(source))).mean())
        return self.score_with_outcomes(X, calibration=calibration, n_bootstrap=n_bootstrap, seed=seed)[0]

    def score_with_outcomes(self, source, *, calibration: str = "binned", n_bootstrap: int = 1000,
                            seed: int = 0) -> tuple[Metrics, ExampleOutcomes]:
        """The metrics, and each example's pairs and correct pairs (what later bootstraps resample)."""
        source = as_source(source)
        margins = self.fitted.margins(source)
        pair_example = source.labels.pair_example
        metrics = compute_metrics(margins, temperature=self.fitted.temperature, calibration=calibration,
                                  n_bootstrap=n_bootstrap, seed=seed, pair_example=pair_example)
        return metrics, example_outcomes(margins, pair_example)

    def save(self, directory: str | Path, *, record: dict | None = None, notes: dict | None = None) -> Path:
        """probe.json + tensors.safetensors, sealed; ``record`` goes into the seal, ``notes`` beside the parameters."""
        fitted = self.fitted
        return save_fitted(replace(fitted, notes={**fitted.notes, **(notes or {})}), directory, record)

    @classmethod
    def _from_fitted(cls, fitted: FittedProbe, fixed: dict) -> "StoreProbe":
        params = {k: v for k, v in fitted.params.items() if v is not None and k not in fixed}
        probe = cls(**fixed, **params)
        object.__setattr__(probe, "fitted_", fitted)
        return probe


class LayerProbe(StoreProbe):
    """A probe fitted at one layer (``layer``: 0 = embeddings, l = output of block l) on activations normalized
    with training statistics (``normalize``: none, center or standardize)."""

    def __init__(self, layer: int | None = None, normalize: str = "center"):
        self.layer = layer
        self.normalize = normalize

    def _normalized(self, source: FeatureSource, feature: Feature = Feature("plain")) -> tuple[np.ndarray, Normalizer]:
        """The feature's training activations at the probe's layer, and their normalizer."""
        x = feature.read(source, self.layer)
        return x, Normalizer.fit(x, self.normalize)

    def _check_layer(self, source: FeatureSource) -> None:
        if getattr(source, "layer_free", False):
            if is_constant(source.residual(self.spec.views[0], self.layer)):
                raise ArrayInputError(f"{self.method}: every row of X is the same; there is nothing to fit")
            return
        if self.layer is None:
            raise UserError(f"{self.method} needs --layer")
        for view in self.spec.views:
            layers = source.layers(view)
            if self.layer not in layers:
                raise UserError(f"layer {self.layer} is out of range for {source.name} ({view} view has layers "
                                f"{format_layers(layers)}; 0 = embeddings)")
            if is_constant(source.residual(view, self.layer)):
                raise UserError(constant_layer_message(source.name, self.layer, view))


class SeededLayerProbe(LayerProbe):
    """A layer probe that draws random numbers (``seed``)."""

    def __init__(self, layer: int | None = None, normalize: str = "center", seed: int = 0):
        super().__init__(layer, normalize)
        self.seed = seed


def make_probe(method: str, layer: int | None = None, **options) -> StoreProbe:
    """The unfitted estimator of ``method`` (a name `probes methods` lists); ``options`` that the method has
    no parameter for are ignored (the CLI passes one set to every method). A layer is refused where the
    method chooses its own."""
    spec = registry.get(method, registry.store_methods())
    fixed = dict(spec.params)
    accepted = set(param_names(spec.estimator)) - set(fixed)
    if "layer" in accepted:
        options["layer"] = layer
    elif layer is not None:
        raise UserError(f"{method} chooses its own layers/heads on a validation split; drop --layer")
    return spec.estimator(**fixed, **{k: v for k, v in options.items() if k in accepted and v is not None})


def param_names(estimator: type) -> tuple[str, ...]:
    """The parameters ``estimator.__init__`` takes (what ``get_params`` returns)."""
    return tuple(name for name in inspect.signature(estimator.__init__).parameters if name != "self")


def load_probe(directory: str | Path) -> StoreProbe:
    """A probe saved by ``save`` (refused if any of its files changed since), fitted and ready to score."""
    def names_of(method: str) -> tuple[str, ...]:
        spec = registry.all_methods().get(method)
        if spec is None or spec.estimator is None:
            raise UserError(f"{Path(directory) / 'probe.json'}: unknown probe method {method!r}")
        return param_names(spec.estimator)

    fitted = read_fitted(directory, names_of)
    spec = registry.get(fitted.method)
    return spec.estimator._from_fitted(fitted, dict(spec.params))

