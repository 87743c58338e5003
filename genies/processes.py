"""`genies run` in several processes: ``torchrun --nproc_per_node N -m genies run ...``, ``accelerate launch
-m genies run ...``, and across nodes through torchrun's rendezvous (docs/several-processes.md).

Rank 0 checks the request, plans the run and writes run.json's settings, as one process does; the plan then
goes to every process (``torch.distributed``: gloo, with nccl beside it on GPUs). Each process works on its
own device (``cuda:LOCAL_RANK``, or the CPU) and the plan's work runs in three stages, a barrier after each:

1. extraction: each (dataset, split) to extract is created by one rank, in turn, which computes its
   first block; a store's blocks are turned over the ranks from there (``actstore.sharding.Shard.first``),
   so a store of one block is one rank's and a large store is everyone's (its other blocks are computed
   after a barrier, once every store exists);
2. the live training sets that all processes train together (DDP, genies/train_layout.py: fewer sets than
   processes, or ``--train-layout ddp``), one after another in every process, then the probe fits (one unit per
   training set, whose layer sweep they share), the other live training sets (one unit each: one training set
   per process) and the evaluations that need no fit (zero-shot, random, few-shot);
3. the evaluations of the fitted and trained methods.

In stages 2 and 3 the units go to the ranks by a deterministic cost-balanced split (the costliest first, each
to the least loaded rank), which every process computes from the shared plan: no scheduler. Each unit
writes its own records atomically (store blocks, sealed fit directories, evaluation files), so a killed run
resumes from what is saved, with the same launch or one process. After stage 3 rank 0 alone reads the
evaluations and writes outcomes.json, results.csv, run.json and the report.

A unit that raises stops its process with one line naming its rank and the error, after setting a failure
key in the launch's torch.distributed store; every other process watches that store (and the others'
heartbeats) from a thread and stops within about a second with one line naming the failed rank. torchrun
also stops the other processes itself when one exits with an error.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Callable

import genies.steps as steps
import registry
from actstore.models import ModelOnDemand
from actstore.sharding import Shard, default_device
from actstore.threads import compute_threads, process_threads
from common import UserError, write_text_atomic
from genies.evaluations import store_is_complete
from genies.plan import EvalStep, Plan, StoreStep
from genies.report import SWEEPS_DIR
from genies.runner import MIXED_DATA_DIR, PreparedRun, RunSummary, Work, finish_run, prepare_run
from genies.train_layout import LayoutChoice, accelerate_as, choose_layout
from registry import Kind

Log = Callable[[str], None]

# Relative costs of the units for the split (a live training set is the costliest unit by far: 42 of them took
# 25 of the 45 minutes of the limit-30 paper run, docs/example-genies-paper-limit30).
COSTS = {"train": 60.0, "live evaluation": 10.0, "probe fit": 4.0, "evaluation": 1.0}
BARRIER_TIMEOUT = timedelta(hours=72)  # the longest one process may work on a stage while the others wait
JOIN_TIMEOUT = timedelta(minutes=30)
POLL_S = 0.5  # how often each process looks for a failure of another
BEAT_S = 2.0
SILENT_AFTER_S = 300.0  # a process whose heartbeat stopped this long ago is taken for dead
ERRORS_DIR = "errors"  # RUN_DIR/errors/rank<r>.txt: the traceback of a process that failed


@dataclass(frozen=True)
class Unit:
    """One piece of a stage, done by one process."""

    kind: str  # "extract", "fit", "train" or "evaluate"
    label: str  # for the progress lines: "train lora on arith_easy"
    steps: tuple
    cost: float = 1.0


def balance(units: list[Unit], size: int) -> list[int]:
    """Each unit's rank: the costliest unit first, each to the least loaded rank (ties: the lower rank, then the
    earlier unit), so every process computes the same split from the same plan."""
    loads, ranks = [0.0] * size, [0] * len(units)
    for index in sorted(range(len(units)), key=lambda i: (-units[i].cost, i)):
        rank = min(range(size), key=lambda r: (loads[r], r))
        ranks[index] = rank
        loads[rank] += units[index].cost
    return ranks


def extraction_groups(plan: Plan) -> list[Unit]:
    """The stores to extract by (dataset, split), in the plan's order: one extraction each (views together)."""
    groups: dict[tuple[str, str], list[StoreStep]] = {}
    for step in plan.stores_to_extract:
        groups.setdefault((step.dataset, step.split), []).append(step)
    return [Unit("extract", f"extract {dataset}/{split} ({', '.join(s.view for s in group)})", tuple(group))
            for (dataset, split), group in groups.items()]


def _needs_fit(step: EvalStep) -> bool:
    return registry.get(step.method).kind in (Kind.PROBE, Kind.LIVE_TRAINED)


def _evaluation(step: EvalStep) -> Unit:
    live = registry.get(step.method).live
    return Unit("evaluate", f"{step.method} ({step.trained_on})" if step.training else step.method, (step,),
                COSTS["live evaluation" if live else "evaluation"])


def fit_stage_units(plan: Plan) -> list[Unit]:
    """Stage 2: a training set's probe fits together (one sweep picks their layers), each live training set
    alone, and the evaluations that need no fit."""
    units, probes = [], {}
    for fit in plan.fits_to_run:
        if fit.live:
            units.append(Unit("train", f"train {fit.method} on {fit.training.name}", (fit,), COSTS["train"]))
        else:
            probes.setdefault(fit.training, []).append(fit)
    for training, group in probes.items():
        units.append(Unit("fit", f"fit {', '.join(f.method for f in group)} on {training.name}", tuple(group),
                          COSTS["probe fit"] * len(group)))
    return units + [_evaluation(step) for step in plan.evaluations_to_run if not _needs_fit(step)]


def evaluation_stage_units(plan: Plan) -> list[Unit]:
    """Stage 3: the evaluations of fitted and trained methods, one unit each."""
    return [_evaluation(step) for step in plan.evaluations_to_run if _needs_fit(step)]


def units_of(units: list[Unit], ranks: list[int], rank: int) -> list[Unit]:
    """``rank``'s units in the plan's order, its evaluations of one test split joined into one unit (its stores
    are read once for all of them)."""
    mine: list[Unit] = []
    for unit, owner in zip(units, ranks):
        if owner != rank:
            continue
        tested_on = unit.steps[0].tested_on if unit.kind == "evaluate" else None
        joined = next((i for i, u in enumerate(mine) if u.kind == "evaluate" and u.steps[0].tested_on == tested_on),
                      None)
        if joined is None:
            mine.append(unit)
        else:
            other = mine[joined]
            mine[joined] = replace(other, label=f"{other.label}, {unit.label}", steps=other.steps + unit.steps,
                                   cost=other.cost + unit.cost)
    return [replace(u, label=f"evaluate {u.label} on {u.steps[0].tested_on}") if u.kind == "evaluate" else u
            for u in mine]


@dataclass
class Assignment:
    """Who does what, the same in every process."""

    extraction: list[Unit]  # creator of group i: rank i % size
    fits: list[list[Unit]]  # per rank
    evaluations: list[list[Unit]]  # per rank
    together: list[Unit] = field(default_factory=list)  # live training sets every rank trains at once (DDP)
    layout: LayoutChoice = field(default_factory=lambda: LayoutChoice("auto", 0, 0, "no live training sets"))

    @classmethod
    def of(cls, plan: Plan, size: int) -> "Assignment":
        fit_units, eval_units = fit_stage_units(plan), evaluation_stage_units(plan)
        trains = [unit for unit in fit_units if unit.kind == "train"]
        layout = choose_layout(plan.config.train_layout, len(trains), size, placed=plan.config.model_spec().placed)
        together = trains[len(trains) - layout.together:] if layout.together else []
        fit_units = [unit for unit in fit_units if not any(unit is t for t in together)]
        fit_ranks, eval_ranks = balance(fit_units, size), balance(eval_units, size)
        return cls(extraction_groups(plan), [units_of(fit_units, fit_ranks, r) for r in range(size)],
                   [units_of(eval_units, eval_ranks, r) for r in range(size)],
                   [replace(unit, label=f"{unit.label} with all {size} processes (DDP)") for unit in together], layout)

    @property
    def total(self) -> int:
        return (len(self.extraction) + len(self.together) + sum(map(len, self.fits))
                + sum(map(len, self.evaluations)))

    def describe(self, rank: int, size: int) -> str:
        """What ``rank`` does: its extractions (it creates the stores), training sets, probe fits, evaluations."""
        created = sum(1 for i in range(len(self.extraction)) if i % size == rank)
        kinds = [unit.kind for unit in self.fits[rank] + self.evaluations[rank]]
        together = f" (+{len(self.together)} with all processes)" if self.together else ""
        return (f"{created} extraction(s), {kinds.count('train')} training set(s){together}, {kinds.count('fit')} "
                f"probe fit unit(s), {kinds.count('evaluate')} evaluation unit(s)")


class _Stopped(BaseException):
    """Raised in the main thread when another process failed or the launcher stops this one (SIGTERM)."""


class Link:
    """This process's ties to the others of its launch: the process group (the plan, the barriers) and the
    launch's key-value store (failures, heartbeats, the progress count)."""

    def __init__(self, rank: int, size: int, local_rank: int, local_size: int, store):
        self.rank, self.size, self.local_rank, self.local_size, self.store = rank, size, local_rank, local_size, store
        self.prefix = f"genies/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        self.reason: str | None = None  # why this process was told to stop
        self._quit = threading.Event()
        self._watcher: threading.Thread | None = None
        self.printed = 0  # the overall count rank 0 printed last

    @classmethod
    def join(cls) -> "Link":
        """Join the launch that RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT describe (torchrun, accelerate)."""
        import torch
        import torch.distributed as dist

        shard = Shard.from_environment()
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise UserError(f"WORLD_SIZE={shard.world_size}, but {' and '.join(missing)} not set: start the processes "
                            "with torchrun or accelerate launch (docs/several-processes.md)")
        local_rank = _variable("LOCAL_RANK", 0)
        try:
            store, rank, size = next(dist.rendezvous("env://", timeout=JOIN_TIMEOUT))
        except (RuntimeError, ValueError, OSError) as err:
            raise UserError(f"process rank {shard.rank} could not join the launch at {os.environ['MASTER_ADDR']}:"
                            f"{os.environ['MASTER_PORT']} ({err})") from None
        gpu = torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("cpu:gloo,cuda:nccl" if gpu else "gloo", store=store, rank=rank, world_size=size,
                                timeout=BARRIER_TIMEOUT)
        return cls(rank, size, local_rank, _variable("LOCAL_WORLD_SIZE", size), store)

    def close(self) -> None:
        import torch.distributed as dist

        self.stop_watching()
        if dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------------ collectives
    def share(self, payload=None):
        """Rank 0's ``payload`` in every process."""
        import torch.distributed as dist

        box = [payload]
        self._collective(lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def gather(self, mine) -> list:
        """Every process's ``mine`` (a barrier)."""
        import torch.distributed as dist

        every = [None] * self.size
        self._collective(lambda: dist.all_gather_object(every, mine))
        return every

    def _collective(self, action: Callable[[], None]) -> None:
        try:
            action()
        except _Stopped:
            raise
        except Exception as err:  # a process of the launch is gone (gloo: connection closed by peer)
            time.sleep(2 * POLL_S)  # its failure key, if it set one, is in the store by now
            raise _Stopped(self.failure() or f"another process of this run stopped ({type(err).__name__})") from None

    # ------------------------------------------------------------------ the store
    def fail(self, message: str) -> None:
        """Tell the others this process failed (the first failure of the launch is kept); this process's own
        watcher stops first, so that it does not take the failure for another's."""
        self.stop_watching()
        try:
            self.store.compare_set(self.prefix + "failed", "", message)
        except Exception:  # the store is gone (rank 0 hosted it): the others notice that instead
            pass

    def failure(self) -> str | None:
        try:
            key = self.prefix + "failed"
            return self.store.get(key).decode() if self.store.check([key]) else None
        except Exception:
            return None

    def count_done(self) -> int:
        """Add one finished unit to the launch's count; the count now."""
        try:
            return int(self.store.add(self.prefix + "done", 1))
        except Exception:
            return 0

    # ------------------------------------------------------------------ watching the others
    def watch(self, total: int, log: Log) -> None:
        """From a thread: stop this process (SIGTERM to itself) when another failed, went silent, or the store is
        gone; on rank 0 also print the overall count as it moves."""
        self._watcher = threading.Thread(target=self._watch, args=(total, log), name="genies run watcher", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        self._quit.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()

    def _watch(self, total: int, log: Log) -> None:
        seen = {rank: (-1, time.monotonic()) for rank in range(self.size) if rank != self.rank}
        next_beat = 0.0
        while not self._quit.wait(POLL_S):
            try:
                failed = self.store.check([self.prefix + "failed"])
                if failed:
                    return self._stop(self.failure() or "another process failed")
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + BEAT_S
                    self.store.add(f"{self.prefix}beat{self.rank}", 1)
                    for rank, (count, since) in seen.items():
                        beats = int(self.store.add(f"{self.prefix}beat{rank}", 0))
                        if beats != count:
                            seen[rank] = (beats, now)
                        elif now - since > SILENT_AFTER_S:
                            return self._stop(f"rank {rank} has given no sign of life for {SILENT_AFTER_S:.0f} s "
                                              "(killed?)")
                if self.rank == 0:
                    done = int(self.store.add(self.prefix + "done", 0))
                    if done > self.printed:
                        self.printed = done
                        log(f"overall: {done}/{total} units done")
            except Exception as err:  # the store is gone: rank 0 (which hosts it without torchrun) or the launcher
                return self._stop(f"lost the launch's store ({type(err).__name__}): rank 0 or the launcher stopped")

    def _stop(self, reason: str) -> None:
        if self._quit.is_set():
            return
        self.reason = reason
        os.kill(os.getpid(), signal.SIGTERM)  # wakes the main thread, even from a sleep


def _variable(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        raise UserError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None


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
            raise _Stopped()

    previous_handler = signal.signal(signal.SIGTERM, stopped)
    try:
        try:
            summary = _run(config, link, command, log, say)
            signal.signal(signal.SIGTERM, previous_handler)  # on failure SIGTERM stays unheard: the line is printed
            return summary
        except _Stopped:
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
        link.share(("plan", prepared.plan))
        plan = prepared.plan
    else:
        what, plan = link.share()
        if what == "refused":
            raise UserError(f"process rank {rank} of {size} stops: rank 0: {plan}")
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
                    raise _Stopped() from None
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
    if isinstance(err, (_Stopped, KeyboardInterrupt)):
        return "stopped"
    line = f"{type(err).__name__}: {err}".splitlines()[0]
    if out is not None:
        try:
            path = write_text_atomic(out / ERRORS_DIR / f"rank{rank}.txt", "".join(traceback.format_exception(err)))
            return f"{line} (traceback: {path})"
        except OSError:
            pass
    return line
