"""Layer sweeps: every method at every layer, each layer of each store read once.

For each layer the sources are read once and every method is fitted on the source's
train-internal fit split (a seeded example-level split, 70% by default) and scored on the
held-out validation split, on the source's own test split (if extracted) and on every eval
store. The best layer per method is chosen on the validation split only, never on the eval
stores. With ``refit`` each probe is fitted again on all training data before the test/eval
stores are scored (what ``probes fit`` would report), at twice the fitting cost.

Layer rule (``LAYER_RULE``): the layers whose validation accuracy is within one standard error
(examples as clusters) of the best are near-ties, which the validation split cannot tell apart;
the middle one of them is chosen (the deeper of the two middle ones for an even count, as for
the chance baseline's middle layer). The plain argmax picked
whichever near-tie the validation noise favoured, often at the edge of a plateau. A validation
split of fewer than ``MIN_VALIDATION_PAIRS`` pairs is flagged: its standard error is then above
0.05 at 50% accuracy, the size of typical layer-to-layer differences.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sklearn.base import clone

from common import UserError, format_layers, write_text_atomic
from probes.constant_layers import is_constant
from probes.estimator import LayerProbe, StoreProbe, as_source
from probes.labels import split_by_example
from common.metrics import Metrics
from probes.sources import FeatureSource

VALIDATION = "validation"
LAYER_RULE = "middle of the layers within one standard error of the best validation accuracy"
MIN_VALIDATION_PAIRS = 100


@dataclass(frozen=True)
class SweepRow:
    """One method at one layer scored on one split (a row of sweep.csv)."""

    method: str
    layer: int
    eval: str  # the split's name (validation: "<train> validation")
    role: str  # validation, source test or eval
    accuracy: float
    accuracy_ci_low: float | None
    accuracy_ci_high: float | None
    accuracy_se: float | None
    auroc: float | None
    brier: float | None
    rms_calibration_error: float | None
    n_pairs: int
    n_examples: int | None
    temperature: float
    fitted_on: str  # train-70% (the fit split) or train (refit on all training data)
    fit_seconds: float
    depth: float | None = None  # layer / n_layers (the model's blocks): comparable across models

    @classmethod
    def scored(cls, method: str, layer: int, name: str, role: str, metrics: Metrics, temperature: float,
               fitted_on: str, seconds: float, n_layers: int | None = None) -> "SweepRow":
        measured = {f.name: getattr(metrics, f.name) for f in fields(Metrics) if f.name in CSV_COLUMNS}
        return cls(method=method, layer=layer, eval=name, role=role, **measured, temperature=temperature,
                   fitted_on=fitted_on, fit_seconds=round(seconds, 4), depth=layer / n_layers if n_layers else None)

    @classmethod
    def from_csv(cls, row: dict[str, str]) -> "SweepRow":
        """A row of sweep.csv (one written before depth was kept has none)."""
        return cls(**{name: row.get(name, "") if name in TEXT_COLUMNS else _number(row.get(name) or "")
                      for name in CSV_COLUMNS})


def _csv_columns() -> list[str]:
    names = [f.name for f in fields(SweepRow) if f.name != "depth"]
    return names[:names.index("layer") + 1] + ["depth"] + names[names.index("layer") + 1:]


CSV_COLUMNS = _csv_columns()  # SweepRow's fields, the depth beside the layer
TEXT_COLUMNS = ("method", "eval", "role", "fitted_on")


@dataclass(frozen=True)
class SweepConfig:
    val_fraction: float = 0.3
    seed: int = 0  # of the validation split
    refit: bool = False
    n_bootstrap: int = 200
    calibration: str = "binned"


@dataclass(frozen=True)
class BestLayer:
    method: str
    layer: int
    validation_accuracy: float
    validation_pairs: int | None = None  # None for a chance baseline (its layer is not chosen on validation)
    near_ties: tuple[int, ...] = ()  # layers within one standard error of the best (the chosen one among them)

    @property
    def small_validation(self) -> bool:
        return self.validation_pairs is not None and self.validation_pairs < MIN_VALIDATION_PAIRS

    def describe(self) -> str:
        ties = f", {len(self.near_ties)} near-ties {format_layers(self.near_ties)}" if len(self.near_ties) > 1 else ""
        small = " SMALL" if self.small_validation else ""
        return f"{self.method} {self.layer} ({self.validation_accuracy:.3f}, {self.validation_pairs} pairs{small}{ties})"


@dataclass(frozen=True)
class SweepResult:
    rows: list[SweepRow]
    best: list[BestLayer]
    eval_names: list[str]  # panels, in order: validation first
    seconds: float
    notes: tuple[str, ...] = ()
    skipped_layers: tuple[int, ...] = ()  # the same vector for every training sequence (probes/constant_layers.py)


def check_sweepable(methods: list[StoreProbe]) -> None:
    fixed = [m.method for m in methods if not isinstance(m, LayerProbe)]
    if fixed:
        raise UserError(f"{', '.join(fixed)} choose their own layers/heads; a layer sweep takes per-layer methods "
                        "(fit them with `probes fit`)")


def sweep_layers(source, methods: list[StoreProbe]) -> list[int]:
    """Layers present in every view that the methods read."""
    source = as_source(source)
    views = {view for method in methods for view in method.spec.views}
    common = set.intersection(*(set(source.layers(view)) for view in views))
    return sorted(common)


def run_sweep(train, evals: list[tuple[str, object]], methods: list[StoreProbe], layers: list[int],
              config: SweepConfig = SweepConfig()) -> SweepResult:
    """Each of ``methods`` (unfitted estimators: their parameters but the layer are kept) at each of ``layers``.
    ``train`` and each eval source: what ``fit`` takes; ``evals``: (role, source) pairs, e.g. ("source test", ...)."""
    start = time.perf_counter()
    check_sweepable(methods)
    train = as_source(train)
    roles, evals = [role for role, _ in evals], [as_source(source) for _, source in evals]
    for source in (train, *evals):
        for method in methods:
            spec = method.spec
            source.require(spec.views, heads=spec.heads, loglik=spec.loglik)
    fit_rows, val_rows = split_by_example(train.labels, config.val_fraction, config.seed)
    fit_part, val_part = train.subset(fit_rows), train.subset(val_rows)
    eval_names = _unique_names(evals)
    share = f"train-{round(100 * len(fit_rows) / len(train.labels))}%"
    n_layers = train.meta.get("model_n_blocks")
    n_layers = int(n_layers) if n_layers else None

    rows: list[SweepRow] = []
    views = sorted({view for method in methods for view in method.spec.views})
    constant = []  # layers that are the same vector for every sequence: left out
    for layer in layers:
        if any(is_constant(train.residual(view, layer)) for view in views):
            constant.append(layer)
            train.release()
            continue
        for method in methods:
            began = time.perf_counter()
            probe = clone(method).set_params(layer=layer).fit(fit_part)
            seconds = time.perf_counter() - began
            rows.append(_row(layer, f"{train.name} {VALIDATION}", VALIDATION, probe, val_part, config, share, seconds,
                             n_layers))
            fitted_on = share
            if config.refit and evals:
                began = time.perf_counter()
                probe = clone(probe).fit(train)
                seconds, fitted_on = time.perf_counter() - began, "train"
            for name, role, source in zip(eval_names, roles, evals):
                rows.append(_row(layer, name, role, probe, source, config, fitted_on, seconds, n_layers))
        for source in (train, *evals):
            source.release()
    best = best_layers(rows, methods)
    return SweepResult(rows, best, [f"{train.name} {VALIDATION}", *eval_names], time.perf_counter() - start,
                       skipped_layers=tuple(constant))


def _row(layer: int, name: str, role: str, probe: StoreProbe, source: FeatureSource, config: SweepConfig,
         fitted_on: str, seconds: float, n_layers: int | None = None) -> SweepRow:
    metrics = probe.score(source, calibration=config.calibration, n_bootstrap=config.n_bootstrap, seed=config.seed)
    return SweepRow.scored(probe.method, layer, name, role, metrics, probe.temperature_, fitted_on, seconds, n_layers)


def best_layers(rows: list[SweepRow], methods: list[StoreProbe]) -> list[BestLayer]:
    """Per method, the middle of the layers within one standard error of the best validation accuracy
    (``LAYER_RULE``; without a standard error, of the layers tied at the best); for a chance baseline,
    the middle swept layer whatever its accuracy."""
    best = []
    for method in methods:
        name, chance = method.method, method.spec.chance_baseline
        candidates = sorted((r for r in rows if r.method == name and r.role == VALIDATION), key=lambda r: r.layer)
        if not candidates:
            continue
        if chance:
            near = candidates
        else:
            top = max(candidates, key=lambda r: (r.accuracy, -r.layer))
            se = top.accuracy_se
            margin = se if se is not None and math.isfinite(se) else 0.0
            near = [r for r in candidates if r.accuracy >= top.accuracy - margin]
        chosen = near[len(near) // 2]
        if chance:  # not chosen on validation data: no validation size behind it
            best.append(BestLayer(name, chosen.layer, chosen.accuracy))
        else:
            best.append(BestLayer(name, chosen.layer, chosen.accuracy, chosen.n_pairs, tuple(r.layer for r in near)))
    return best


def _unique_names(sources: list[FeatureSource]) -> list[str]:
    names, seen = [], {}
    for source in sources:
        name = source.name
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return names


def csv_text(rows: list[SweepRow]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(asdict(row) for row in rows)
    return text.getvalue()


def write_csv(rows: list[SweepRow], path: str | Path) -> Path:
    return write_text_atomic(Path(path), csv_text(rows))


def read_csv(path: str | Path) -> list[SweepRow]:
    with Path(path).open() as handle:
        return [SweepRow.from_csv(row) for row in csv.DictReader(handle)]


def _number(text: str):
    if text == "":
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
