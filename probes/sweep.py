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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from actstore.common import UserError, format_layers, write_text_atomic
from probes.fitting import evaluate, fit_probe
from probes.labels import split_by_example
from probes.methods import FitConfig, Method
from probes.sources import FeatureSource

VALIDATION = "validation"
LAYER_RULE = "middle of the layers within one standard error of the best validation accuracy"
MIN_VALIDATION_PAIRS = 100
CSV_COLUMNS = ["method", "layer", "eval", "role", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "accuracy_se", "auroc", "brier",
               "rms_calibration_error", "n_pairs", "n_examples", "temperature", "fitted_on", "fit_seconds"]


@dataclass(frozen=True)
class SweepConfig:
    fit: FitConfig = field(default_factory=FitConfig)
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


@dataclass
class SweepResult:
    rows: list[dict]
    best: list[BestLayer]
    eval_names: list[str]  # panels, in order: validation first
    seconds: float
    notes: list[str] = field(default_factory=list)


def check_sweepable(methods: list[Method]) -> None:
    fixed = [m.name for m in methods if not m.per_layer]
    if fixed:
        raise UserError(f"{', '.join(fixed)} choose their own layers/heads; a layer sweep takes per-layer methods "
                        "(fit them with `probes fit`)")


def sweep_layers(source: FeatureSource, methods: list[Method]) -> list[int]:
    """Layers present in every view that the methods read."""
    views = {view for method in methods for view in method.views}
    common = set.intersection(*(set(source.layers(view)) for view in views))
    return sorted(common)


def run_sweep(train: FeatureSource, evals: list[tuple[str, FeatureSource]], methods: list[Method], layers: list[int],
              config: SweepConfig = SweepConfig()) -> SweepResult:
    """``evals``: (role, source) pairs, e.g. ("source test", ...), ("eval", ...)."""
    start = time.perf_counter()
    check_sweepable(methods)
    roles, evals = [role for role, _ in evals], [source for _, source in evals]
    for source in (train, *evals):
        for method in methods:
            source.require(method.views, heads=method.heads, loglik=method.loglik)
    fit_rows, val_rows = split_by_example(train.labels, config.val_fraction, config.seed)
    fit_part, val_part = train.subset(fit_rows), train.subset(val_rows)
    eval_names = _unique_names(evals)
    share = f"train-{round(100 * len(fit_rows) / len(train.labels))}%"

    rows: list[dict] = []
    for layer in layers:
        for method in methods:
            began = time.perf_counter()
            probe = fit_probe(method.name, fit_part, layer, config.fit)
            seconds = time.perf_counter() - began
            rows.append(_row(method, layer, f"{train.name} {VALIDATION}", VALIDATION, probe, val_part, config, share,
                             seconds))
            fitted_on = share
            if config.refit and evals:
                began = time.perf_counter()
                probe = fit_probe(method.name, train, layer, config.fit)
                seconds, fitted_on = time.perf_counter() - began, "train"
            for name, role, source in zip(eval_names, roles, evals):
                rows.append(_row(method, layer, name, role, probe, source, config, fitted_on, seconds))
        for source in (train, *evals):
            source.release()
    best = best_layers(rows, methods)
    return SweepResult(rows, best, [f"{train.name} {VALIDATION}", *eval_names], time.perf_counter() - start)


def _row(method: Method, layer: int, name: str, role: str, probe, source: FeatureSource, config: SweepConfig,
         fitted_on: str, seconds: float) -> dict:
    metrics = evaluate(probe, source, calibration=config.calibration, n_bootstrap=config.n_bootstrap,
                       seed=config.seed)
    return {"method": method.name, "layer": layer, "eval": name, "role": role, **asdict(metrics),
            "temperature": probe.temperature, "fitted_on": fitted_on, "fit_seconds": round(seconds, 4)}


def best_layers(rows: list[dict], methods: list[Method]) -> list[BestLayer]:
    """Per method, the middle of the layers within one standard error of the best validation accuracy
    (``LAYER_RULE``; without a standard error, of the layers tied at the best); for a chance baseline,
    the middle swept layer whatever its accuracy."""
    best = []
    for method in methods:
        candidates = sorted((r for r in rows if r["method"] == method.name and r["role"] == VALIDATION),
                            key=lambda r: r["layer"])
        if not candidates:
            continue
        if method.chance_baseline:
            near = candidates
        else:
            top = max(candidates, key=lambda r: (r["accuracy"], -r["layer"]))
            se = top.get("accuracy_se")
            margin = se if se is not None and math.isfinite(se) else 0.0
            near = [r for r in candidates if r["accuracy"] >= top["accuracy"] - margin]
        chosen = near[len(near) // 2]
        if method.chance_baseline:  # not chosen on validation data: no validation size behind it
            best.append(BestLayer(method.name, chosen["layer"], chosen["accuracy"]))
        else:
            best.append(BestLayer(method.name, chosen["layer"], chosen["accuracy"], chosen.get("n_pairs"),
                                  tuple(r["layer"] for r in near)))
    return best


def _unique_names(sources: list[FeatureSource]) -> list[str]:
    names, seen = [], {}
    for source in sources:
        name = source.name
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return names


def write_csv(rows: list[dict], path: str | Path) -> Path:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, text.getvalue())


def read_csv(path: str | Path) -> list[dict]:
    numeric = {c for c in CSV_COLUMNS if c not in ("method", "eval", "role", "fitted_on")}
    with Path(path).open() as handle:
        return [{k: (_number(v) if k in numeric else v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _number(text: str):
    if text == "":
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
