"""What `probes fit / eval / sweep` do, as library calls; cli.py only parses and prints.

A STORE argument is one store URL (its sibling views are found by name), or several URLs of
the same split's views joined by commas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from actstore.errors import UserError
from probes.fitting import evaluate, fit_probe
from probes.methods import FitConfig, parse_methods
from probes.metrics import Metrics
from probes.plot import plot_sweep
from probes.probe import Probe, load_probe, save_probe
from probes.sources import FeatureSource, StoreSource
from probes.sweep import VALIDATION, SweepConfig, SweepResult, run_sweep, sweep_layers, write_csv

TABLE_COLUMNS = ["store", "role", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "auroc", "brier",
                 "rms_calibration_error", "n_pairs"]


@dataclass
class FitReport:
    probe: Probe
    rows: list[dict]
    saved: Path | None = None

    def as_dict(self) -> dict:
        return {"method": self.probe.method, "temperature": self.probe.temperature, "config": self.probe.config,
                "trained_on": self.probe.trained_on, "saved": str(self.saved) if self.saved else None,
                "results": self.rows}


def open_source(spec: str) -> StoreSource:
    urls = [url.strip() for url in str(spec).split(",") if url.strip()]
    return StoreSource(urls)


def _row(name: str, role: str, metrics: Metrics) -> dict:
    return {"store": name, "role": role, **asdict(metrics)}


def evaluate_all(probe: Probe, sources: list[tuple[str, FeatureSource]], *, calibration: str = "binned",
                 n_bootstrap: int = 1000, seed: int = 0) -> list[dict]:
    return [_row(source.name, role, evaluate(probe, source, calibration=calibration, n_bootstrap=n_bootstrap, seed=seed))
            for role, source in sources]


def eval_sources(train: StoreSource | None, eval_specs: list[str]) -> list[tuple[str, StoreSource]]:
    """(role, source): the training store's own test split first (when extracted), then each --eval."""
    sources = []
    test = train.test_split() if train is not None else None
    if test is not None:
        sources.append(("source test", test))
    sources += [("eval", open_source(spec)) for spec in eval_specs]
    return sources


def fit_command(method: str, train_spec: str, layer: int | None = None, eval_specs: tuple[str, ...] = (),
                out: str | Path | None = None, config: FitConfig = FitConfig(), *, calibration: str = "binned",
                n_bootstrap: int = 1000) -> FitReport:
    train = open_source(train_spec)
    probe = fit_probe(method, train, layer, config)
    sources = [("train (in-sample)", train), *eval_sources(train, list(eval_specs))]
    rows = evaluate_all(probe, sources, calibration=calibration, n_bootstrap=n_bootstrap, seed=config.seed)
    saved = save_probe(probe, out) if out else None
    return FitReport(probe, rows, saved)


def eval_command(probe_path: str | Path, eval_specs: tuple[str, ...], *, calibration: str = "binned",
                 n_bootstrap: int = 1000, seed: int = 0) -> tuple[Probe, list[dict]]:
    if not eval_specs:
        raise UserError("give at least one --eval STORE")
    probe = load_probe(probe_path)
    return probe, evaluate_all(probe, eval_sources(None, list(eval_specs)), calibration=calibration,
                               n_bootstrap=n_bootstrap, seed=seed)


def parse_sweep_layers(spec: str, available: list[int]) -> list[int]:
    from actstore.layers import parse_layers

    if not available:
        raise UserError("the training stores share no layer across the views these methods need")
    chosen = parse_layers(spec, max(available), model="these stores")
    missing = [layer for layer in chosen if layer not in available]
    if missing:
        raise UserError(f"layer {missing[0]} is not in the training stores (they hold {','.join(map(str, available))})")
    return list(chosen)


def sweep_command(methods_spec: str, train_spec: str, eval_specs: tuple[str, ...], out_dir: str | Path,
                  layers_spec: str = "all", config: SweepConfig = SweepConfig()) -> tuple[SweepResult, Path, Path]:
    methods = parse_methods(methods_spec)
    train = open_source(train_spec)
    evals = eval_sources(train, list(eval_specs))
    for method in methods:
        train.require(method.views, heads=method.heads, loglik=method.loglik)
    layers = parse_sweep_layers(layers_spec, sweep_layers(train, methods))
    result = run_sweep(train, evals, methods, layers, config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(result.rows, out_dir / "sweep.csv")
    png_path = plot_sweep(result.rows, result.eval_names, out_dir / "sweep.png",
                          best={b.method: b.layer for b in result.best},
                          title=f"{train.meta.get('model', '')} trained on {train.name}".strip())
    return result, csv_path, png_path


def best_layer_rows(result: SweepResult) -> list[dict]:
    """One row per method: chosen layer, its validation accuracy, and its accuracy on each eval store."""
    rows = []
    for best in result.best:
        row = {"method": best.method, "best_layer": best.layer, "validation_accuracy": best.validation_accuracy}
        for r in result.rows:
            if r["method"] == best.method and r["layer"] == best.layer and r["role"] != VALIDATION:
                row[r["eval"]] = r["accuracy"]
        rows.append(row)
    return rows


def jsonable(value):
    """NaN -> None (JSON has no NaN), numpy scalars -> Python, recursively."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
