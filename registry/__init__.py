"""Every method of the benchmark, one entry each: what it is, what it reads, how the paper names it.

A method is declared once, by the module that implements it, as a ``MethodSpec`` in that
module's ``METHODS`` tuple: each module of the ``probes.methods`` package (probes and the
store-read zero-shot baseline) and ``finetune.methods`` (LoRA, prompt tuning, few-shot). The
registry collects them on first use, so adding a probe method is one new module under
probes/methods/ (plus its test). This module imports neither torch nor the method modules at
import time, so every package can read it.

Who reads it: the probes commands and sweeps (views, layer), the genies planner and steps (kind:
how a method is fitted and evaluated), finetune (which methods it trains or runs as a
baseline), and the report (the paper's intervention names and why a method has none).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Callable, Iterable, Literal

from common import UserError

CONTRIBUTORS = ("probes.methods", "finetune.methods")
# The paper's interventions in its own order (reference §5): `--methods paper` follows it.
PAPER_INTERVENTIONS = ("zero_shot", "few_shot", "lora_fine_tuning", "prompt_tuning", "mms", "lat_stim_1", "lat_stim_2",
                       "cra", "ccs")


Site = Literal["residual", "heads", "loglik", "model"]  # model: runs the language model, reads no store


class Kind(str, Enum):
    PROBE = "probe"  # fitted on activation stores (probes.methods), scored from stores
    STORE_BASELINE = "store baseline"  # nothing to fit; scored from what the plain store holds (log-likelihoods)
    LIVE_TRAINED = "live trained"  # a reward model trained on the running model (finetune train, then finetune eval)
    LIVE_UNTRAINED = "live untrained"  # runs the model without training (few-shot: its training set gives the shots)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    kind: Kind
    summary: str
    views: tuple[str, ...] = ()  # store views it reads (probes and store baselines)
    site: Site = "residual"  # heads: needs `--site heads` stores; loglik: the plain store's log-likelihoods
    takes_layer: bool = False  # fitted at one given layer (else it picks its own layers/heads, or has none)
    chance_baseline: bool = False  # measures no capability: never the TTC; its layer is never chosen on labels
    base_model_baseline: bool = False  # `finetune eval --method NAME` scores it live on a base model
    paper_intervention: str | None = None  # the paper's name, only where it is the same method
    stands_in_for: str | None = None  # the paper intervention it replaces in `--methods paper`
    paper_note: str = ""  # why it has no paper column
    estimator: Callable | None = None  # probes: the scikit-learn-shaped estimator class
    # What it runs with: a probe's fixed estimator parameters (lat-stim-1: view=plain), a live method's
    # training defaults (learning_rate).
    params: tuple[tuple[str, object], ...] = ()

    @property
    def counts_as_capability(self) -> bool:
        """Whether it may be the target-tuned capability (the best method on the target reference)."""
        return not self.chance_baseline

    @property
    def from_stores(self) -> bool:
        return self.kind in (Kind.PROBE, Kind.STORE_BASELINE)

    @property
    def live(self) -> bool:
        return self.kind in (Kind.LIVE_TRAINED, Kind.LIVE_UNTRAINED)

    @property
    def runs_in_benchmark(self) -> bool:
        """`genies run` runs it (a run with a per-head method extracts its stores with per-head outputs)."""
        return True

    @property
    def heads(self) -> bool:
        return self.site == "heads"

    @property
    def loglik(self) -> bool:
        return self.site == "loglik"


@lru_cache(maxsize=1)
def _table() -> dict[str, MethodSpec]:
    table: dict[str, MethodSpec] = {}
    for module in _contributing_modules():
        for spec in getattr(module, "METHODS", ()):
            if spec.name in table:
                raise RuntimeError(f"method {spec.name!r} declared twice ({module.__name__})")
            table[spec.name] = spec
    return table


def _contributing_modules():
    for name in CONTRIBUTORS:
        package = importlib.import_module(name)
        yield package
        if hasattr(package, "__path__"):  # a package: each of its modules, in name order
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
                yield importlib.import_module(f"{name}.{info.name}")


def all_methods() -> dict[str, MethodSpec]:
    return dict(_table())


def get(name: str, among: Iterable[str] | None = None) -> MethodSpec:
    """The method called ``name``; a UserError naming the choices (``among``, default all) if there is none."""
    choices = list(_table()) if among is None else list(among)
    if name not in choices:
        raise UserError(f"unknown method {name!r} (choose from {', '.join(choices)})")
    return _table()[name]


def names(where: Callable[[MethodSpec], bool] = lambda spec: True) -> tuple[str, ...]:
    return tuple(name for name, spec in _table().items() if where(spec))


def store_methods() -> tuple[str, ...]:
    """What `probes` fits from stores: the probes and the store baselines."""
    return names(lambda spec: spec.from_stores)


def benchmark_methods() -> tuple[str, ...]:
    """What `genies run --methods` takes."""
    return names(lambda spec: spec.runs_in_benchmark)


def paper_methods() -> tuple[str, ...]:
    """`--methods paper`: for each of the paper's interventions, the same method (the per-head mms and cra
    read the top attention heads, as the paper's do), and beside it the one that stands in for it where there
    is one (the residual-stream mms and cra, under their own names)."""
    runnable = [_table()[name] for name in benchmark_methods()]
    chosen = []
    for intervention in PAPER_INTERVENTIONS:
        chosen += [s.name for s in runnable if s.paper_intervention == intervention][:1]
        chosen += [s.name for s in runnable if s.stands_in_for == intervention][:1]
    return tuple(dict.fromkeys(chosen))


def paper_counterparts() -> dict[str, str]:
    """Our method -> the paper's intervention, only where it is the same method, in the paper's order."""
    by_intervention = {spec.paper_intervention: name for name, spec in _table().items() if spec.paper_intervention}
    return {by_intervention[i]: i for i in PAPER_INTERVENTIONS if i in by_intervention}


def method_sets() -> dict[str, tuple[str, ...]]:
    """Names that stand for several methods in `--methods`: `paper`, and `all` (paper + the rest `genies run` runs)."""
    paper = paper_methods()
    return {"paper": paper, "all": paper + tuple(m for m in benchmark_methods() if m not in paper)}


def benchmark_methods_help() -> str:
    """`genies run --methods`' help, naming what the registry holds."""
    sets = method_sets()
    extra = [m for m in sets["all"] if m not in sets["paper"]]
    return (f"Comma-separated: {', '.join(benchmark_methods())}; or `paper` (the paper's interventions: "
            f"{', '.join(sets['paper'])}) or `all` (paper + {', '.join(extra)}).")


def expand_methods(spec: str) -> tuple[str, ...]:
    """A comma-separated method list in which `paper` and `all` stand for their sets; order kept, no repeats."""
    sets = method_sets()
    requested = [name.strip() for name in str(spec).split(",") if name.strip()]
    return tuple(dict.fromkeys(m for name in requested for m in sets.get(name, (name,))))
