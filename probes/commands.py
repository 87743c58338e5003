"""What `probes fit / eval / sweep` do, as library calls; the cli package only parses and prints.

A STORE argument is one store URL (its sibling views are found by name), or several URLs of
the same split's views joined by commas.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from threadpoolctl import threadpool_limits

import registry
from common import UserError, check_writable_dir, format_layers, parse_list
from actstore.store.locations import StoreNames
from actstore.store.opening import check_named
from actstore.store.roots import checked_location
from probes.estimator import StoreProbe, load_probe, make_probe
from common.metrics import Metrics
from probes.sources import FeatureSource, StoreSource
from probes.sweep import VALIDATION, SweepConfig, SweepResult, run_sweep, sweep_layers, write_csv

# BLAS threads while fitting. One is the default: on a shared 2-core machine multi-threaded BLAS
# spins while the other core is busy and a sweep ran 7x slower with 2 threads than with 1.
DEFAULT_THREADS = 1

TABLE_COLUMNS = ["store", "role", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "auroc", "brier",
                 "rms_calibration_error", "n_pairs"]


@dataclass(frozen=True)
class ScoredRow:
    """A fitted probe's metrics on one store."""

    store: str
    role: str  # train (in-sample), source test or eval
    metrics: Metrics

    def as_dict(self) -> dict:
        return {"store": self.store, "role": self.role, **asdict(self.metrics)}


@dataclass(frozen=True)
class FitReport:
    probe: StoreProbe
    rows: tuple[ScoredRow, ...]
    saved: Path | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        fitted = self.probe.fitted
        return {"method": fitted.method, "temperature": fitted.temperature, "config": fitted.params,
                "trained_on": fitted.trained_on, "saved": str(self.saved) if self.saved else None,
                "results": [row.as_dict() for row in self.rows], "notes": list(self.notes)}


def method_rows() -> list[dict]:
    """`probes methods`: every method fitted from stores, what it reads and whether it takes --layer."""
    rows = []
    for spec in map(registry.get, registry.store_methods()):
        layer = ("--layer" if spec.takes_layer else "none" if spec.kind is registry.Kind.STORE_BASELINE
                 else "chooses its own")
        rows.append({"method": spec.name, "views": ",".join(spec.views) + (" (heads)" if spec.heads else ""),
                     "layer": layer, "what": spec.summary})
    return rows


def open_source(spec: str, names: StoreNames = StoreNames()) -> StoreSource:
    """One split's stores: a URL, a path or a name (``MODEL/DATASET/SPLIT[/VIEW]``), or several, comma-separated."""
    urls = []
    for asked in parse_list(spec):
        url = checked_location(names.url(asked), "STORE")
        check_named(url, names.name(asked, url), asked)
        urls.append(url)
    return StoreSource(urls, names.limit)


def evaluate_all(probe: StoreProbe, sources: list[tuple[str, FeatureSource]], *, calibration: str = "binned",
                 n_bootstrap: int = 1000, seed: int = 0) -> tuple[ScoredRow, ...]:
    return tuple(ScoredRow(source.name, role, probe.score(source, calibration=calibration, n_bootstrap=n_bootstrap,
                                                          seed=seed)) for role, source in sources)


def eval_sources(train: StoreSource | None, eval_specs: list[str], methods: list[StoreProbe] = (),
                 names: StoreNames = StoreNames()) -> tuple[list[tuple[str, StoreSource]], list[str]]:
    """(role, source) pairs and notes: the training store's own test split first, then each --eval.

    The test split is found, not asked for: it is used when it has what ``methods`` read, and
    otherwise skipped with a note (an explicit --eval store that lacks a view is an error).
    """
    sources, notes = [], []
    test = train.test_split() if train is not None else None
    if test is not None:
        try:
            for method in methods:
                spec = method.spec
                test.require(spec.views, heads=spec.heads, loglik=spec.loglik)
            sources.append(("source test", test))
        except UserError as missing:
            notes.append(f"source test split skipped: {missing}")
    sources += [("eval", open_source(spec, names)) for spec in eval_specs]
    return sources, notes


def blas_threads(threads: int | None):
    return threadpool_limits(threads) if threads else nullcontext()


def fit_command(probe: StoreProbe, train_spec: str, eval_specs: tuple[str, ...] = (), out: str | Path | None = None,
                *, calibration: str = "binned", n_bootstrap: int = 1000, seed: int = 0,
                threads: int | None = DEFAULT_THREADS, names: StoreNames = StoreNames()) -> FitReport:
    """Fit the unfitted ``probe`` (see ``make_probe``) on the train store; score it in-sample, on the train store's
    test split (if extracted) and on each eval store; ``seed`` seeds the bootstrap."""
    if out:
        check_writable_dir(out, "the probe directory (--out)")
    train = open_source(train_spec, names)
    evals, notes = eval_sources(train, list(eval_specs), [probe], names)
    with blas_threads(threads):
        probe.fit(train)
        rows = evaluate_all(probe, [("train (in-sample)", train), *evals], calibration=calibration,
                            n_bootstrap=n_bootstrap, seed=seed)
    saved = probe.save(out) if out else None
    return FitReport(probe, rows, saved, tuple(notes))


def eval_command(probe_path: str | Path, eval_specs: tuple[str, ...], *, calibration: str = "binned",
                 n_bootstrap: int = 1000, seed: int = 0,
                 names: StoreNames = StoreNames()) -> tuple[StoreProbe, tuple[ScoredRow, ...]]:
    if not eval_specs:
        raise UserError("give at least one --eval STORE")
    probe = load_probe(probe_path)
    sources, _ = eval_sources(None, list(eval_specs), names=names)
    return probe, evaluate_all(probe, sources, calibration=calibration, n_bootstrap=n_bootstrap, seed=seed)


def parse_sweep_layers(spec: str, available: list[int]) -> list[int]:
    from actstore.store.layers import parse_layers

    if not available:
        raise UserError("the training stores share no layer across the views these methods need")
    if str(spec).strip().lower() == "all":
        return list(available)  # every layer the stores hold, which need not be contiguous
    chosen = parse_layers(spec, max(available), model="these stores")
    missing = [layer for layer in chosen if layer not in available]
    if missing:
        raise UserError(f"layer {missing[0]} is not in the training stores (they hold {','.join(map(str, available))})")
    return list(chosen)


def parse_methods(spec: str, **options) -> list[StoreProbe]:
    """Unfitted estimators of the comma-separated methods, each given the ``options`` it has a parameter for."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise UserError("--methods: no method named")
    return [make_probe(name, **options) for name in dict.fromkeys(names)]


def sweep_command(methods: list[StoreProbe], train_spec: str, eval_specs: tuple[str, ...], out_dir: str | Path,
                  layers_spec: str = "all", config: SweepConfig = SweepConfig(),
                  threads: int | None = DEFAULT_THREADS, names: StoreNames = StoreNames()) -> tuple[SweepResult, Path, Path]:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: is a file; give a directory (sweep.csv and sweep.png are written into it)")
    check_writable_dir(out_dir, "the sweep directory (--out)")
    train = open_source(train_spec, names)
    evals, notes = eval_sources(train, list(eval_specs), methods, names)
    for method in methods:
        spec = method.spec
        train.require(spec.views, heads=spec.heads, loglik=spec.loglik)
    layers = parse_sweep_layers(layers_spec, sweep_layers(train, methods))
    with blas_threads(threads):
        result = run_sweep(train, evals, methods, layers, config)
    if result.skipped_layers:
        notes.append(f"layer(s) {format_layers(list(result.skipped_layers))} left out: the same vector for every "
                     "training sequence (no probe can be fitted there)")
    result = replace(result, notes=tuple(notes))
    from probes.plot import plot_sweep  # matplotlib only where a plot is drawn
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(result.rows, out_dir / "sweep.csv")
    from common.model_names import model_name

    n_layers = train.meta.get("model_n_blocks")
    label = model_name(str(train.meta["model"])) if train.meta.get("model") else ""
    png_path = plot_sweep(result.rows, result.eval_names, out_dir / "sweep.png",
                          best={b.method: b.layer for b in result.best}, n_layers=int(n_layers) if n_layers else None,
                          title=f"{label} trained on {train.name}".strip())
    return result, csv_path, png_path


def best_layer_rows(result: SweepResult) -> list[dict]:
    """One row per method: chosen layer, the validation pairs it was chosen on, how many layers were within one
    standard error of the best (probes.sweep.LAYER_RULE), and its accuracy on the validation split and on each
    eval store, each with its bootstrap interval's bounds (`_low`, `_high`) beside it."""
    rows = []
    for best in result.best:
        row = {"method": best.method, "best_layer": best.layer, "validation_pairs": best.validation_pairs,
               "near_ties": len(best.near_ties) or None}
        for r in result.rows:
            if r.method == best.method and r.layer == best.layer:
                name = "validation" if r.role == VALIDATION else r.eval
                row.update({name: r.accuracy, f"{name}_low": r.accuracy_ci_low, f"{name}_high": r.accuracy_ci_high})
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
