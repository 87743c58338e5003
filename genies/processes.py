"""`genies run` in several processes: ``torchrun --nproc_per_node N -m genies run ...``, ``accelerate launch
-m genies run ...``, and across nodes through torchrun's rendezvous (docs/several-processes.md).

Rank 0 checks the request, plans the run and writes run.json's settings, as one process does; the plan then
goes to every process (``torch.distributed``: gloo, with nccl beside it on GPUs). Each process works on its
own device (``cuda:LOCAL_RANK``, or the CPU) and the plan's work runs in three stages, a barrier after each:

1. extraction: each (dataset, split) to extract is created by one rank, in turn, which computes its
   first block; a store's blocks are turned over the ranks from there (``actstore.store.sharding.Shard.first``),
   so a store of one block is one rank's and a large store is everyone's (its other blocks are computed
   after a barrier, once every store exists);
2. the live training sets that all processes train together (DDP, genies/train_layout.py: fewer sets than
   processes, or ``--train-layout ddp``), one after another in every process, then the probe fits (one unit per
   training set, whose layer sweep they share), the other live training sets (one unit each: one training set
   per process) and the evaluations that need no fit (zero-shot, random, few-shot);
3. the evaluations of the fitted and trained methods.

In stages 2 and 3 the units go to the ranks by a deterministic cost-balanced split (the costliest first, each
to the least loaded rank), which every process computes from the shared plan: no scheduler
(genies/work_split.py). Each unit
writes its own records atomically (store blocks, sealed fit directories, evaluation files), so a killed run
resumes from what is saved, with the same launch or one process. After stage 3 rank 0 alone reads the
evaluations and writes outcomes.json, results.csv, run.json and the report.

A unit that raises stops its process with one line naming its rank and the error, after setting a failure
key in the launch's torch.distributed store; every other process watches that store (and the others'
heartbeats) from a thread (genies/process_group.py) and stops within about a second with one line naming the failed rank. torchrun
also stops the other processes itself when one exits with an error.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import genies.steps as steps
from actstore.engine.threads import compute_threads, process_threads
from actstore.models import ModelOnDemand
from actstore.models.devices import default_device
from actstore.store.sharding import Shard
from common import UserError, write_text_atomic
from genies.evaluations import store_is_complete
from genies.plan import Plan
from genies.process_group import POLL_S, Link, Log, Stopped
from genies.rank_checks import PlannedInputs, check_same_inputs, check_same_request
from genies.report import SWEEPS_DIR
from genies.runner import MIXED_DATA_DIR, PreparedRun, RunSummary, Work, finish_run, prepare_run
from genies.train_layout import accelerate_as, choose_layout
from genies.work_split import Assignment, Unit

ERRORS_DIR = "errors"  # RUN_DIR/errors/rank<r>.txt: the traceback of a process that failed



@dataclass
class _Share:
    """What one process reports at the end."""

    model_loads: int = 0
    n_layers: int | None = None
    chosen_layers: list = field(default_factory=list)
    busy_s: float = 0.0
    units: int = 0


def run_in_processes(config, *, command: str | None = None, log: Log = print) -> RunSummary | None:
    """This process's part of a `genies run` launched in several processes; rank 0 returns the summary."""
    link = Link.join()
    rank, size = link.rank, link.size
    say: Log = lambda line: log(f"[rank {rank}] {line}")
    signals = []

    def stopped(signum, frame) -> None:  # the first SIGTERM stops the work; the next ones (torchrun's) are not heard
        if not signals:
            signals.append(signum)
            raise Stopped()

    previous_handler = signal.signal(signal.SIGTERM, stopped)
    try:
        try:
            summary = _run(config, link, command, log, say)
            signal.signal(signal.SIGTERM, previous_handler)  # on failure SIGTERM stays unheard: the line is printed
            return summary
        except Stopped:
            link.stop_watching()
            raise UserError(f"process rank {rank} of {size} stops: {link.reason or link.failure() or _TERMINATED}"
                            ) from None
        except KeyboardInterrupt:
            link.fail(f"rank {rank} was interrupted")
            raise UserError(f"process rank {rank} of {size} stops: interrupted") from None
    finally:
        signals.append("done")
        link.close()


_TERMINATED = ("stopped by the launcher (SIGTERM): another process of this run failed or was killed; "
               "run the same command again to resume")


def _run(config, link: Link, command: str | None, log: Log, say: Log) -> RunSummary | None:
    rank, size = link.rank, link.size
    prepared: PreparedRun | None = None
    if rank == 0:
        try:
            choose_layout(config.train_layout, 0, size, placed=config.model_spec().placed)  # before run.json
            prepared = prepare_run(config, command, log)
        except BaseException as err:
            link.share(("refused", _describe(err)))
            raise
        link.share(("plan", (prepared.plan, PlannedInputs.of(config, prepared.plan))))
        plan = prepared.plan
    else:
        what, shared = link.share()
        if what == "refused":
            raise UserError(f"process rank {rank} of {size} stops: rank 0: {shared}")
        plan, planned = shared
        try:
            check_same_request(config, planned.request)
            check_same_inputs(plan, planned)
        except UserError as err:
            link.fail(f"rank {rank}: {err}")
            raise UserError(f"process rank {rank} of {size} stops: {err}") from None
    config = plan.config
    assignment = Assignment.of(plan, size)
    device = default_device()
    cpu = not device.startswith("cuda")
    threads = config.threads or (max(1, process_threads() // link.local_size) if cpu else None)
    if rank == 0:
        log(f"{size} processes share the work: the stores by (dataset, split) and their blocks, then the fits, "
            "training sets and evaluations by a cost-balanced split; each line below names its process")
        if assignment.layout.per_process + assignment.layout.together:
            log(assignment.layout.line(size))
    with compute_threads(threads) as threads:
        say(f"pid {os.getpid()} on {socket.gethostname()}, {device}, {threads} thread(s): "
            f"{assignment.describe(rank, size)}")
        link.watch(assignment.total, log)
        share, seconds = _work(plan, assignment, link, say, device)
    shares = link.gather(share)
    link.stop_watching()
    if rank == 0 and link.printed < assignment.total:
        log(f"overall: {assignment.total}/{assignment.total} units done")
    if rank != 0:
        say(f"finished {share.units} unit(s) in {share.busy_s:.1f}s of work; rank 0 writes the results")
        return None
    trained = assignment.layout.per_process + assignment.layout.together
    work = Work(stores=len(plan.stores_to_extract), fits=len(plan.fits_to_run),
                evaluations=len(plan.evaluations_to_run), model_loads=sum(s.model_loads for s in shares),
                seconds=seconds, chosen_layers=[c for s in shares for c in s.chosen_layers],
                n_layers=next((s.n_layers for s in shares if s.n_layers), None), processes=size,
                train_layout=assignment.layout.record() if trained else None)
    return finish_run(prepared, work, log)


def _work(plan: Plan, assignment: Assignment, link: Link, say: Log, device: str) -> tuple[_Share, dict[str, float]]:
    """The three stages, each ended by a barrier; this process's share of the run, and each stage's wall time."""
    config, out, rank, size = plan.config, Path(plan.config.out), link.rank, link.size
    model = ModelOnDemand(config.model_spec(), log=say)
    share, seconds = _Share(), {}
    fits = {(f.method, f.training): f.path for f in plan.fits}
    unit_log = _unit_log(say)

    def do(unit: Unit, action: Callable[[], object], *, counted: bool = True, together: bool = False) -> object:
        began = time.perf_counter()
        try:
            result = action()
        except Exception as err:
            if together:  # an all-reduce broken by another process's failure: that failure is the news
                time.sleep(2 * POLL_S)
                link.reason = link.reason or link.failure()
                if link.reason:
                    raise Stopped() from None
            message = _describe(err, out, rank)
            link.fail(f"rank {rank} failed: {message}")
            raise UserError(f"process rank {rank} of {size} failed: {message}") from None
        took = time.perf_counter() - began
        share.busy_s += took
        if counted:
            share.units += 1
            done = link.count_done()
            if rank == 0:
                link.printed = max(link.printed, done)
            say(f"done {unit.label} in {took:.1f}s ({done}/{assignment.total} units of the run)")
        return result

    def stage(name: str, body: Callable[[], None]) -> None:
        began = time.perf_counter()
        body()
        link.gather(None)  # the barrier: every process has finished this stage
        seconds[name] = time.perf_counter() - began
        if rank == 0:
            say(f"{name} done in {seconds[name]:.1f}s (every process)")

    def extraction() -> None:
        groups = assignment.extraction
        for index, unit in enumerate(groups):  # the stores this process creates, with its blocks of them
            if index % size == rank:
                shard = Shard(rank, size, first=index % size)
                do(unit, lambda: steps.extract_stores(config, list(unit.steps), model, unit_log, shard=shard))
        link.gather(None)  # every store exists: the other blocks of large stores, without waiting for a creation
        settings = steps.store_settings(config)
        for index, unit in enumerate(groups):
            if index % size != rank and not all(store_is_complete(s.url, settings) for s in unit.steps):
                shard, lines = Shard(rank, size, first=index % size), []
                results = do(unit, lambda: steps.extract_stores(config, list(unit.steps), model, lines.append,
                                                                shard=shard), counted=False)
                if any(result.sequences_computed for result in results):
                    for line in lines:
                        unit_log(line)
                    say(f"done its blocks of {unit.label.removeprefix('extract ')}")

    def train_together() -> None:  # every rank, the same sets in the same order; rank 0 says and counts them
        quiet: Log = lambda line: None
        for unit in assignment.together:
            accelerate_as(device, together=True)
            do(unit, lambda: steps.train_live(config, list(unit.steps), out / MIXED_DATA_DIR, model,
                                              unit_log if rank == 0 else quiet, together=True),
               counted=rank == 0, together=True)

    def run(units: list[Unit]) -> None:
        for unit in units:
            steps_ = list(unit.steps)
            if unit.kind == "train":
                accelerate_as(device, together=False)
                do(unit, lambda: steps.train_live(config, steps_, out / MIXED_DATA_DIR, model, unit_log))
            elif unit.kind == "fit":
                do(unit, lambda: share.chosen_layers.extend(steps.fit_probes(config, steps_, out / SWEEPS_DIR,
                                                                             unit_log)))
            else:
                do(unit, lambda: steps.run_evaluations(config, steps_, fits, model, unit_log))

    if assignment.extraction:
        stage("extraction", extraction)
    if any(assignment.fits) or assignment.together:
        stage("fits and training", lambda: (train_together(), run(assignment.fits[rank])))
    if any(assignment.evaluations):
        stage("evaluation", lambda: run(assignment.evaluations[rank]))
    share.model_loads = model.load_count
    share.n_layers = model.get().n_layers if model.is_loaded else None
    return share, seconds


def _unit_log(say: Log) -> Log:
    """The step functions' lines, with their per-call counters ("[train 1/1] ") turned into the verb."""
    import re

    counter = re.compile(r"^\[(extract|fit|train|evaluate) \d+/\d+\] ")
    return lambda line: say(counter.sub(r"\1 ", line))


def _describe(err: BaseException, out: Path | None = None, rank: int = 0) -> str:
    """One line for an error: a user mistake's message; otherwise its type and message, its traceback kept in
    RUN_DIR/errors/rank<r>.txt."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, (Stopped, KeyboardInterrupt)):
        return "stopped"
    line = f"{type(err).__name__}: {err}".splitlines()[0]
    if out is not None:
        try:
            path = write_text_atomic(out / ERRORS_DIR / f"rank{rank}.txt", "".join(traceback.format_exception(err)))
            return f"{line} (traceback: {path})"
        except OSError:
            pass
    return line
