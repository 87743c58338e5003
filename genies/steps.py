"""Executing the plan's steps: extract stores, fit probes (choosing layers on source validation
data), train live reward models, and evaluate. genies/runner.py orders and reports them.

Module attributes (``extraction.extract``, ``actstore.models.load_model`` through ``ModelOnDemand``)
are looked up at call time, so a test can make any model work fail loudly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import actstore.engine.extraction as extraction
import registry
from common import UserError
from actstore.store.locations import store_url
from actstore.models import ModelOnDemand
from actstore.store.sharding import Shard
from genies.evaluations import evaluation_from_metrics, save_evaluation
from genies.generalization import Evaluation
from genies.mixing import MixedSource, write_mixed_distribution
from genies.refits import refit_count, refit_kind, refit_paths, refit_seed, write_resampled_distribution
from common.metrics import score_degeneracy
from genies.plan import EVAL_SPLIT, TRAIN_SPLIT, EvalStep, FitStep, RunConfig, StoreStep, TrainingSet, depth_layer
from probes.estimator import DEGENERATE_NOTE, StoreProbe, load_probe, make_probe
from probes.labels import split_by_example
from probes.resample import resampled
from probes.sources import FeatureSource, StoreSource
from probes.sweep import MIN_VALIDATION_PAIRS, SweepConfig, SweepRow, read_csv, run_sweep, sweep_layers, write_csv
from registry import Kind

Log = Callable[[str], None]
VALIDATION_PAIRS = "validation_pairs"  # probe config: pairs of the validation split that chose its layer


def store_settings(config: RunConfig) -> dict:
    """The settings of the stores ``extract_stores`` makes: a store is reused only when made with them."""
    defaults = extraction.ExtractConfig(model=config.model, datasets=("any",))
    named_dtype = {} if config.compute_dtype == "auto" else {"compute_dtype": config.compute_dtype}
    return {"layers": "all", "limit": config.limit, "prompt_format": config.prompt_format, "dtype": defaults.dtype,
            "site": config.store_site, "skip_bad": defaults.skip_bad, "quantization": None,
            "model_fingerprint": config.model_fingerprint, **named_dtype}


def extract_stores(config: RunConfig, steps: list[StoreStep], model: ModelOnDemand, log: Log, *,
                   progress: bool = False, shard: Shard | None = None) -> list[extraction.StoreResult]:
    """One extraction per (dataset, split), all its missing views at once (they share tokenization).
    ``shard``: this process's blocks under `genies run` in several processes (genies/processes.py)."""
    done = []
    groups: dict[tuple[str, str], list[StoreStep]] = {}
    for step in steps:
        groups.setdefault((step.dataset, step.split), []).append(step)
    for index, ((dataset, split), group) in enumerate(groups.items(), start=1):
        views = tuple(step.view for step in group)
        log(f"[extract {index}/{len(groups)}] {dataset}/{split} views {','.join(views)}")
        stale = [step for step in group if step.stale]
        for step in stale:
            log(f"    the data file of {dataset}/{split} changed since {step.url} was extracted: extracting it again")
        results = extraction.extract(
            extraction.ExtractConfig(model=config.model, datasets=(dataset,), splits=(split,), views=views,
                                     layers="all", limit=config.limit, out=config.resolved_store_root,
                                     site=config.store_site,
                                     data_dir=config.data_dir, overwrite=bool(stale), progress=progress,
                                     prompt_format=config.prompt_format, compute_dtype=config.compute_dtype,
                                     device_map=config.device_map, prompt_reuse=config.prompt_reuse,
                                     batch_tokens=config.batch_tokens,
                                     max_memory=config.max_memory, offload_dir=config.offload_dir),
            loaded=model.get(), shard=shard)
        done += results
        computed = [result for result in results if result.sequences_computed]
        for result in results:
            log(f"    {result.view}: {result.status}, {result.n_sequences} sequences")
        if computed:  # views computed together are each charged a share of their passes: say the sum
            seconds = sum(result.seconds for result in computed)
            sequences = sum(result.sequences_computed for result in computed)
            rate = f", {sequences / seconds:.1f} seq/s" if seconds else ""
            log(f"    {sequences} sequences of {len(computed)} view(s) computed in {seconds:.1f}s{rate}")
    return done


def _holding(source: StoreSource, **claimed) -> StoreSource:
    """``source``, once its stores say they hold what their location claims (a store copied or
    moved to another dataset's place is refused, not read as that dataset)."""
    for key, value in claimed.items():
        if source.meta.get(key) != value:
            raise UserError(f"{source.primary_url}: holds {key} {source.meta.get(key)!r}, but its location says "
                            f"{value!r} (moved or copied from elsewhere?); delete it to extract it again")
    return source


def fixed_layer(config: RunConfig, n_layers: int | None) -> int | None:
    """The layer of a fixed ``--layer``: the number, or the layer at the relative depth (None: ``best``)."""
    if isinstance(config.layer, float):
        if not n_layers:
            raise UserError(f"--layer {config.layer}: the stores do not record the model's number of layers, so a "
                            "relative depth cannot be turned into a layer; give a layer number")
        return depth_layer(config.layer, n_layers)
    return config.layer if isinstance(config.layer, int) else None


def n_blocks(source: FeatureSource) -> int | None:
    found = source.meta.get("model_n_blocks")
    return int(found) if found is not None else None


def _fit_for(step: EvalStep, path: Path, config: RunConfig, n_layers: int | None = None) -> StoreProbe:
    """The saved probe of ``step``'s fit, once it says it is that fit (method, training data, layer)."""
    probe = load_probe(path)
    takes_layer = registry.get(step.method).takes_layer
    layer = fixed_layer(config, n_layers) if config.layer != "best" and takes_layer else None
    claims = {"method": (probe.method, step.method),
              "training set": (probe.trained_on_.get("dataset"), step.training.dataset)}
    if layer is not None:
        claims["layer"] = (probe.fitted.params.get("layer"), layer)
    for what, (found, expected) in claims.items():
        if found != expected:
            raise UserError(f"{path}: a probe with {what} {found!r}, where this run expects {expected!r} "
                            "(moved or copied from elsewhere?); delete it to fit it again")
    return probe


class Sources:
    """Store sources by (dataset, split), opened once per phase and released together."""

    def __init__(self, config: RunConfig):
        self.config, self._open = config, {}

    def get(self, dataset: str, split: str, views: tuple[str, ...]) -> StoreSource:
        key = (dataset, split, views)
        if key not in self._open:
            urls = [store_url(self.config.resolved_store_root, self.config.model, dataset, split, view,
                              site=self.config.store_site, prompt_format=self.config.prompt_format) for view in views]
            self._open[key] = _holding(StoreSource(urls, self.config.limit), model=self.config.model, dataset=dataset,
                                       split=split, limit=self.config.limit)
        return self._open[key]

    def training(self, training: TrainingSet, views: tuple[str, ...]) -> FeatureSource:
        source = self.get(training.dataset, TRAIN_SPLIT, views)
        if not training.mixed_with:
            return source
        target = self.get(training.mixed_with, TRAIN_SPLIT, views)
        return MixedSource(source, target, training.n_mixed, self.config.seed)

    def release(self) -> None:
        for source in self._open.values():
            source.release()
        self._open.clear()


@dataclass(frozen=True)
class ChosenLayer:
    method: str
    training: str
    layer: int
    validation_accuracy: float
    validation_pairs: int | None = None
    near_ties: tuple[int, ...] = ()


def fit_probes(config: RunConfig, steps: list[FitStep], sweeps_dir: Path, log: Log) -> list[ChosenLayer]:
    """Fit every probe step; with ``--layer best`` one sweep per training set picks each method's
    layer on a validation split carved from that training set (never from any test split). Each fit's
    refits (genies/refits.py) are saved before the fit itself, so that a sealed fit has all of them."""
    by_training: dict[TrainingSet, list[FitStep]] = {}
    for step in steps:
        by_training.setdefault(step.training, []).append(step)
    chosen: list[ChosenLayer] = []
    sources = Sources(config)
    for index, (training, group) in enumerate(by_training.items(), start=1):
        log(f"[fit {index}/{len(by_training)}] {', '.join(s.method for s in group)} on {training.name}")
        views = tuple(dict.fromkeys(v for s in group for v in registry.get(s.method).views))
        train = sources.training(training, views)
        layers = _layers(config, training, group, train, sweeps_dir, chosen, log)
        validation_pairs = {c.method: c.validation_pairs for c in chosen if c.training == training.name}
        _fit_refits(config, group, train, layers, log)
        for step in group:
            probe = _probe(config, step.method, layers.get(step.method)).fit(train)
            pairs = (validation_pairs.get(step.method) if registry.get(step.method).takes_layer
                     else _top_k_validation_pairs(probe, train))
            probe.save(step.path, record={"data": step.data},
                       notes={VALIDATION_PAIRS: pairs} if pairs is not None else None)
        sources.release()
    return chosen


def _fit_refits(config: RunConfig, group: list[FitStep], train: FeatureSource, layers: dict[str, int | None],
                log: Log) -> None:
    """Refit r of every method of ``group`` that has one, on training set r (the examples drawn with replacement);
    with ``--layer best`` a sweep on that resample chooses its layers, as the fit's own sweep did. A chance
    baseline keeps the fit's layer (it is never chosen on labels)."""
    counts = {step.method: refit_count(config, step.method) for step in group}
    if not any(counts.values()):
        return
    began = time.perf_counter()
    for refit in range(1, max(counts.values()) + 1):
        seed = refit_seed(config.seed, refit)
        resample = resampled(train, seed)
        due = [step for step in group if counts[step.method] >= refit]
        swept = [s.method for s in due if registry.get(s.method).takes_layer and not registry.get(s.method).chance_baseline]
        refit_layers = dict(layers)
        if config.layer == "best" and swept:
            methods = [make_probe(m, seed=seed) for m in swept]
            sweep = run_sweep(resample, [], methods, sweep_layers(resample, methods), SweepConfig(seed=seed))
            refit_layers.update({best.method: best.layer for best in sweep.best})
        for step in due:
            path = refit_paths(step.path, counts[step.method])[refit - 1]
            make_probe(step.method, refit_layers.get(step.method), seed=seed).fit(resample).save(
                path, record={"data": step.data, "refit": refit})
    log(f"    refits: {', '.join(f'{m} {n}' for m, n in counts.items() if n)} in {time.perf_counter() - began:.1f}s")


def _probe(config: RunConfig, method: str, layer: int | None = None) -> StoreProbe:
    return make_probe(method, layer, seed=config.seed)


def _top_k_validation_pairs(probe: StoreProbe, train: FeatureSource) -> int:
    """Pairs of the train-internal validation split on which lat-stim-style methods rank their layers."""
    _, val_rows = split_by_example(train.labels, probe.val_fraction, probe.seed)
    return int((~train.labels.is_best[val_rows]).sum())


def _layers(config: RunConfig, training: TrainingSet, group: list[FitStep], train: FeatureSource, sweeps_dir: Path,
            chosen: list[ChosenLayer], log: Log) -> dict[str, int | None]:
    per_layer = [s.method for s in group if registry.get(s.method).takes_layer]
    layers: dict[str, int | None] = {s.method: None for s in group}
    if config.layer != "best":
        return {**layers, **{m: fixed_layer(config, n_blocks(train)) for m in per_layer}}
    if not per_layer:
        return layers
    methods = [_probe(config, m) for m in per_layer]
    sweep = run_sweep(train, [], methods, sweep_layers(train, methods), SweepConfig(seed=config.seed))
    write_sweep_csv(sweep.rows, sweeps_dir / f"{training.name}.csv")
    for best in sweep.best:
        layers[best.method] = best.layer
        chosen.append(ChosenLayer(best.method, training.name, best.layer, best.validation_accuracy,
                                  best.validation_pairs, best.near_ties))
    log("    best layers (source validation): " + ", ".join(b.describe() for b in sweep.best)
        + f" in {sweep.seconds:.1f}s")
    small = sorted({b.validation_pairs for b in sweep.best if b.small_validation})
    if small:
        log(f"    warning: {training.name}'s validation split has {small[0]} pairs (< {MIN_VALIDATION_PAIRS}): "
            "its layer choices are noisy")
    return layers


def write_sweep_csv(rows: list[SweepRow], path: Path) -> Path:
    """Write the sweep's rows, keeping the rows of other methods from an earlier (interrupted) run."""
    swept = {row.method for row in rows}
    kept = [row for row in read_csv(path) if row.method not in swept] if path.is_file() else []
    return write_csv(kept + rows, path)


def train_live(config: RunConfig, steps: list[FitStep], mixed_data_dir: Path, model: ModelOnDemand, log: Log, *,
               together: bool = False) -> None:
    """LoRA / prompt-tuning reward models via finetune, on the run's model (each adapter is taken out again).
    ``together``: every process of the launch trains each set at once, each step's pairs split over them (DDP:
    genies/train_layout.py); rank 0 saves it."""
    from distributions.data import resolve_data_dir
    from finetune.train import TrainConfig, train_reward_model

    for index, step in enumerate(steps, start=1):
        log(f"[train {index}/{len(steps)}] {step.method} on {step.training.name}")
        dataset, data_dir, limit = _live_training_data(config, step.training, mixed_data_dir)
        runs = [(step.path, dataset, data_dir, limit, config.seed)]
        for refit, path in enumerate(refit_paths(step.path, refit_count(config, step.method)), start=1):
            seed = refit_seed(config.seed, refit)
            name = write_resampled_distribution(resolve_data_dir(data_dir), dataset, limit, seed, mixed_data_dir,
                                                f"{step.training.name}.refit{refit}")
            runs.insert(-1, (path, name, str(mixed_data_dir), None, seed))  # the refits first: a sealed fit has them
        for path, dataset, data_dir, limit, seed in runs:
            result = train_reward_model(TrainConfig(method=step.method, model=config.model, dataset=dataset,
                                                    data_dir=data_dir, out=str(path), limit=limit, seed=seed,
                                                    prompt_format=config.prompt_format,
                                                    precision=config.training_precision,
                                                    steps=config.train_steps, max_tokens=config.train_max_tokens,
                                                    split_steps=together),
                                        progress=False, loaded=model.get(), seal={"data": step.data})
            what = "" if path == step.path else f" (refit on {dataset})"
            log(f"    {result.steps} steps, loss {result.mean_loss('first'):.3f} -> {result.mean_loss('last'):.3f}, "
                f"{result.total_seconds:.0f}s{what}")


def _live_training_data(config: RunConfig, training: TrainingSet, mixed_data_dir: Path) -> tuple[str, str | None, int | None]:
    if not training.mixed_with:
        return training.dataset, config.data_dir, config.limit
    from distributions.data import resolve_data_dir

    name = write_mixed_distribution(resolve_data_dir(config.data_dir), training.dataset, training.mixed_with,
                                    training.n_mixed, config.seed, mixed_data_dir, limit=config.limit)
    return name, str(mixed_data_dir), None  # the mixed training split is limited already


def run_evaluations(config: RunConfig, steps: list[EvalStep], fits: dict[tuple[str, TrainingSet], Path],
                    model: ModelOnDemand, log: Log) -> None:
    """Score every evaluation step and save it; stores of one test split are read once for all methods."""
    by_tested: dict[str, list[EvalStep]] = {}
    for step in steps:
        by_tested.setdefault(step.tested_on, []).append(step)
    sources = Sources(config)
    for index, (tested_on, group) in enumerate(by_tested.items(), start=1):
        fitted = ", ".join(f"{s.method} ({s.trained_on or 'untrained'})" for s in group)
        log(f"[evaluate {index}/{len(by_tested)}] on {tested_on}: {fitted}")
        for step in group:
            save_evaluation(step.path, _evaluate(config, step, fits, sources, model), step.data)
        sources.release()


def _evaluate(config: RunConfig, step: EvalStep, fits: dict[tuple[str, TrainingSet], Path], sources: Sources,
              model: ModelOnDemand) -> Evaluation:
    spec = registry.get(step.method)
    if spec.from_stores:
        test = sources.get(step.tested_on, EVAL_SPLIT, spec.views)
        probe = (_probe(config, step.method).fit(test) if spec.kind is Kind.STORE_BASELINE
                 else _fit_for(step, fits[(step.method, step.training)], config, n_blocks(test)))
        # No per-evaluation CI: results.csv and the report bootstrap the kept per-example outcomes instead.
        metrics, outcomes = probe.score_with_outcomes(test, n_bootstrap=0, seed=config.seed)
        refit_outcomes = _refit_outcomes(config, step, fits, test)
        degenerate = None if spec.chance_baseline or spec.kind is not Kind.PROBE else (
            probe.notes_.get(DEGENERATE_NOTE) or score_degeneracy(probe.margins(test), probe.temperature_))
        return evaluation_from_metrics(step.method, step.trained_on, step.tested_on, metrics,
                                       probe.fitted.params.get("layer"), outcomes, probe.notes_.get(VALIDATION_PAIRS),
                                       compute_dtype=(test.meta.get("identity") or {}).get("compute_dtype"),
                                       degenerate=degenerate, refit_outcomes=refit_outcomes,
                                       refits=refit_kind(step.method) if refit_outcomes else None)
    live_fit = fits[(step.method, step.training)] if spec.kind is Kind.LIVE_TRAINED else None
    result = _live_result(config, step, live_fit, model)
    refits = refit_paths(live_fit, refit_count(config, step.method)) if live_fit else []
    refit_outcomes = tuple(_live_result(config, step, path, model).outcomes for path in refits) or None
    return evaluation_from_metrics(step.method, step.trained_on, step.tested_on, result.metrics,
                                   outcomes=result.outcomes, compute_dtype=model.get().compute_dtype,
                                   refit_outcomes=refit_outcomes, refits=refit_kind(step.method) if refits else None)


def _refit_outcomes(config: RunConfig, step: EvalStep, fits: dict[tuple[str, TrainingSet], Path],
                    test: FeatureSource) -> tuple | None:
    """Each refit of the step's fit scored on ``test`` (None: the method has no refits)."""
    count = refit_count(config, step.method) if step.training is not None else 0
    if not count:
        return None
    paths = refit_paths(fits[(step.method, step.training)], count)
    return tuple(load_probe(path).score_with_outcomes(test, n_bootstrap=0, seed=config.seed)[1] for path in paths)


def _live_result(config: RunConfig, step: EvalStep, run_dir: Path | None, model: ModelOnDemand):
    """The trained reward model in ``run_dir`` (or few-shot, with ``run_dir`` None) scored on the step's test split."""
    from finetune.eval_request import EvalRequest, run_eval

    if run_dir is not None:
        request = EvalRequest(dataset=step.tested_on, run_dir=run_dir, data_dir=config.data_dir, limit=config.limit,
                              seed=config.seed)
    else:  # few-shot: the training set gives the shots (the runner refuses it with --mix-target)
        request = EvalRequest(dataset=step.tested_on, method="few-shot", model=config.model,
                              shots_from=step.training.dataset, data_dir=config.data_dir, limit=config.limit,
                              seed=config.seed, prompt_format=config.prompt_format)
    return run_eval(request, loaded=model.get())
