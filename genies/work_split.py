"""Who does what in a `genies run` over several processes: the plan's work as units, each stage's units split
by a deterministic cost balance (the costliest first, each to the least loaded rank) that every process
computes from the shared plan, so no scheduler is needed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import registry
from genies.plan import EvalStep, Plan, StoreStep
from genies.train_layout import LayoutChoice, choose_layout
from registry import Kind

# Relative costs of the units for the split (a live training set is the costliest unit by far: 42 of them took
# 25 of the 45 minutes of the limit-30 paper run, docs/example-genies-paper-limit30).
COSTS = {"train": 60.0, "live evaluation": 10.0, "probe fit": 4.0, "evaluation": 1.0}


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
