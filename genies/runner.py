"""`genies run`: plan, print the plan, execute it with progress, then results.csv + report.md.

Everything lives in RUN_DIR (fits/, evaluations/, sweeps/, results.csv, report.md, run.json)
except the activation stores, which are shared under the store root. A second identical run
finds every evaluation done, so it neither loads the model nor extracts nor fits.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import registry
from common.atomic import file_sha256
from common import UserError, check_writable_dir
from actstore.store.sharding import Shard
from actstore.engine.threads import compute_threads
from actstore.models import ModelOnDemand, check_family, load_tokenizer
from actstore.store.software import software_versions
from actstore.engine.views import require_chat_template
from genies.baselines import live_training_reasons
from genies.evaluations import (ROW_OUTCOMES_FILE, filesystem_checks, load_evaluation, store_conflict,
                               write_row_evaluations)
from genies.generalization import ResultRow, rows_with_evaluations
from genies.plan import (RESULT_SETTINGS, Plan, RunConfig, build_plan, check_reusable, settings_digest,
                         training_set_for)
from genies.report import SWEEPS_DIR, Report, report_from_rows
from genies.computed_with import computed_with
from genies.results_csv import RESULTS_FILE, write_results
from genies.run_info import RESULTS_CHECKSUM, read_run_info, write_run_info
from genies.steps import ChosenLayer, extract_stores, fit_probes, run_evaluations, store_settings, train_live
from genies.uncertainty import RunBootstrap
from manifests import load_manifest
from registry import Kind

MIXED_DATA_DIR = "mixed-data"  # --mix-target: mixed training distributions for live methods


@dataclass
class RunSummary:
    run_dir: Path
    plan_lines: list[str]
    rows: list[ResultRow]
    report: Report
    stores_extracted: int
    fits_run: int
    evaluations_run: int
    model_loads: int
    wall_seconds: float
    chosen_layers: list[ChosenLayer] = field(default_factory=list)

    @property
    def reused_everything(self) -> bool:
        return not (self.stores_extracted or self.fits_run or self.evaluations_run or self.model_loads)

    @property
    def results_path(self) -> Path:
        return self.run_dir / RESULTS_FILE


def resolve_config(config: RunConfig) -> RunConfig:
    """`--shifts demo` reads the bundled demo data unless told otherwise."""
    if config.shifts == "demo" and config.data_dir is None:
        return replace(config, data_dir="demo")
    return config


def run_benchmark(config: RunConfig, *, command: str | None = None, log: Callable[[str], None] = print,
                  progress: bool | None = None) -> RunSummary | None:
    """Plan, execute, write the results. Under `torchrun` / `accelerate launch` (WORLD_SIZE > 1) the processes
    share the work (genies/processes.py) and only rank 0 returns a summary (the others None)."""
    if Shard.from_environment().world_size > 1:
        from genies.processes import run_in_processes

        return run_in_processes(config, command=command, log=log)
    run = prepare_run(config, command, log)
    with compute_threads(config.threads) as threads:
        how = "--threads" if config.threads else "the cores free when the run started; set with --threads"
        log(f"torch computes with {threads} thread(s) ({how})")
        work = _execute(run.plan, run.out, log, sys.stderr.isatty() if progress is None else progress)
    return finish_run(run, work, log)


@dataclass
class PreparedRun:
    """A run checked and planned, its settings written to run.json: what executing and finishing it need."""

    config: RunConfig
    shifts: list
    previous: dict  # run.json of an earlier run of RUN_DIR ({} when none)
    settings: dict
    plan: Plan
    plan_lines: list[str]
    started: float  # time.perf_counter() when the run began
    started_at: str

    @property
    def out(self) -> Path:
        return Path(self.config.out)


def prepare_run(config: RunConfig, command: str | None, log: Callable[[str], None]) -> PreparedRun:
    """Check the request and RUN_DIR, build the plan, write run.json's settings and print the plan."""
    started, started_at = time.perf_counter(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    config = resolve_config(config)
    if config.mix_target and any(registry.get(m).kind is Kind.LIVE_UNTRAINED for m in config.methods):
        raise UserError("few-shot takes its shots from one distribution; run it without --mix-target")
    shifts = load_manifest(config.shifts)
    check_family(config.model)
    if config.prompt_format == "chat":  # before run.json is locked to chat or the model loads
        require_chat_template(load_tokenizer(config.model))
    out = check_writable_dir(config.out, "the run directory (--out)")
    previous = read_run_info(out)
    check_reusable(previous, config)
    settings = _run_settings(config, command, started_at)
    plan = build_plan(config, shifts, filesystem_checks(config.data_dir, store_settings(config), settings_digest(config)))
    _refuse_other_extractions(plan)  # the data and the stores checked before run.json locks the directory
    write_run_info(out, settings, {})  # settings before any work, so a crashed run is not mixed with others
    plan_lines = plan.summary_lines()
    for line in plan_lines:
        log(line)
    return PreparedRun(config, shifts, previous, settings, plan, plan_lines, started, started_at)


def finish_run(run: PreparedRun, work: "Work", log: Callable[[str], None]) -> RunSummary:
    """From the plan's evaluations (all saved by now): outcomes.json, results.csv, run.json and the report."""
    config, plan, shifts, out, previous, settings = run.config, run.plan, run.shifts, run.out, run.previous, run.settings
    evaluations = [load_evaluation(step.path) for step in plan.evaluations]
    n_layers = work.n_layers or _recorded_n_layers(plan, previous)
    hardly_trained = live_training_reasons(out / "fits", [m for m in config.methods
                                                          if registry.get(m).kind is Kind.LIVE_TRAINED])
    found = rows_with_evaluations(shifts, evaluations, config.methods, ttc_methods=config.ttc_methods,
                                  training_set=lambda shift: training_set_for(shift, config.mix_target).name,
                                  ineligible=lambda e: hardly_trained.get((e.method, e.trained_on)), n_layers=n_layers)
    evaluations = {row.key: e for row, e in found}
    bootstrap = RunBootstrap([row for row, _ in found], evaluations, seed=config.seed)
    rows = [bootstrap.with_intervals(row) for row, _ in found]
    write_results(out / RESULTS_FILE, rows)
    write_row_evaluations(out / ROW_OUTCOMES_FILE, found, file_sha256(out / RESULTS_FILE))
    wall = time.perf_counter() - run.started
    data = {key: value for step in plan.evaluations for key, value in step.data.items()}
    write_run_info(out, settings, {**work.record(), "n_layers": n_layers, "wall_time_s": round(wall, 1),
                                   "data_fingerprints": dict(sorted(data.items())), **computed_with(plan, previous),
                                   RESULTS_CHECKSUM: file_sha256(out / RESULTS_FILE)})
    report = report_from_rows(out, rows, evaluations, keep_degenerate=config.keep_degenerate)
    if not (plan.stores_to_extract or plan.fits_to_run or plan.evaluations_to_run):
        log(f"reused everything: no model loaded, no extraction, no fitting ({wall:.1f}s)")
    log(f"wrote {out / RESULTS_FILE} ({len(rows)} rows) and {report.path} in {wall:.1f}s")
    return RunSummary(out, run.plan_lines, rows, report, work.stores, work.fits, work.evaluations, work.model_loads,
                      wall, work.chosen_layers)


def _recorded_n_layers(plan: Plan, previous: dict) -> int | None:
    """The model's number of blocks when this run loaded no model: from a store of the plan, an earlier run of
    RUN_DIR (same model: ``check_reusable``), or the model's config."""
    from actstore.models import model_n_blocks
    from actstore.store import find_store

    for step in plan.stores:
        store = find_store(step.url)
        if store is not None and store.meta.get("model_n_blocks"):
            return int(store.meta["model_n_blocks"])
    if previous.get("n_layers"):
        return int(previous["n_layers"])
    return model_n_blocks(plan.config.model)


def _refuse_other_extractions(plan: Plan) -> None:
    """Before any model work: a store to extract where a complete store made with other settings lies (another
    --compute-dtype, layers, ...) is refused; a store stale only in its data file is extracted again over it."""
    expected = store_settings(plan.config)
    for step in plan.stores_to_extract:
        conflict = None if step.stale else store_conflict(step.url, expected)
        if conflict:
            raise UserError(f"{step.url}: holds an extraction made with other settings ({conflict}); use another "
                            "--store-root, or delete the store to extract it again")


@dataclass
class Work:
    stores: int = 0
    fits: int = 0
    evaluations: int = 0
    model_loads: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    chosen_layers: list[ChosenLayer] = field(default_factory=list)
    n_layers: int | None = None  # the model's blocks, when this run loaded it
    processes: int = 1  # the processes that shared the work (genies/processes.py)
    train_layout: dict | None = None  # how they shared the live training sets (genies/train_layout.py)

    def record(self) -> dict:
        return {"stores_extracted": self.stores, "fits_run": self.fits, "evaluations_run": self.evaluations,
                "model_loads": self.model_loads, "phase_seconds": {k: round(v, 1) for k, v in self.seconds.items()},
                "chosen_layers": [vars(c) for c in self.chosen_layers],
                **({"processes": self.processes} if self.processes > 1 else {}),
                **({"train_layout": self.train_layout} if self.train_layout else {})}


def _execute(plan: Plan, out: Path, log: Callable[[str], None], progress: bool) -> Work:
    config, work = plan.config, Work()
    model = ModelOnDemand(config.model_spec(), log=log)

    def phase(name: str, action: Callable[[], object]) -> None:
        began = time.perf_counter()
        action()
        work.seconds[name] = time.perf_counter() - began
        log(f"  {name} done in {work.seconds[name]:.1f}s")

    if plan.stores_to_extract:
        phase("extraction", lambda: extract_stores(config, plan.stores_to_extract, model, log, progress=progress))
        work.stores = len(plan.stores_to_extract)
    probe_fits = [f for f in plan.fits_to_run if registry.get(f.method).kind is Kind.PROBE]
    live_fits = [f for f in plan.fits_to_run if f.live]
    if probe_fits:
        phase("probe fitting", lambda: work.chosen_layers.extend(fit_probes(config, probe_fits, out / SWEEPS_DIR, log)))
    if live_fits:
        phase("live training", lambda: train_live(config, live_fits, out / MIXED_DATA_DIR, model, log))
    work.fits = len(probe_fits) + len(live_fits)
    if plan.evaluations_to_run:
        fits = {(f.method, f.training): f.path for f in plan.fits}
        phase("evaluation", lambda: run_evaluations(config, plan.evaluations_to_run, fits, model, log))
        work.evaluations = len(plan.evaluations_to_run)
    work.model_loads = model.load_count
    work.n_layers = model.get().n_layers if model.is_loaded else None
    return work


def _run_settings(config: RunConfig, command: str | None, started_at: str) -> dict:
    return {
        **({"command": command} if command else {}),
        "model": config.model,
        "model_name": config.label,
        "manifest": config.shifts,
        "methods": list(config.methods),
        "ttc_methods": list(config.ttc_methods),
        "layer": config.layer,
        "mix_target": config.mix_target,
        "store_root": config.resolved_store_root,
        "started_at": started_at,
        "software": software_versions(),
        "attention_requested": config.attention,  # what the stores were computed with: computed_with (finish_run)
        **{name: getattr(config, name) for name in RESULT_SETTINGS},
    }
