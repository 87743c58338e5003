"""`make demo` (`genies demo`): the toolkit end to end on the bundled model and the bundled demo data.

It runs `genies run --model smollm2-135m --shifts demo --data-dir demo --layer best` with the
representation methods that read the plain view (one extraction per split), on the first
DEMO_LIMIT examples of each split so it finishes in a few minutes on a 2-core CPU, then draws a
layer sweep for one shift. Everything goes under ./demo-out (stores included), so a second
`make demo` reuses every store, fit and evaluation.
"""

from __future__ import annotations

from pathlib import Path

import registry
from actstore.store.locations import store_url
from actstore.models import DEFAULT_MODEL
from genies.plan import RunConfig
from probes.estimator import make_probe
from probes.plot import plot_sweep
from probes.sources import StoreSource
from probes.sweep import SweepConfig, run_sweep, sweep_layers

MODEL = DEFAULT_MODEL
DEMO_METHODS = ("zero-shot", "mms", "lat", "logreg", "random")
DEMO_LIMIT = 40  # examples per split: 1,000 sequences, about 3 minutes of extraction on a busy 2-core CPU
OUT = Path("demo-out")
SWEEP_SHIFT = ("arith_easy", "arith_hard")  # source, target of the layer-sweep plot


def demo_config(out: Path = OUT, limit: int | None = DEMO_LIMIT) -> RunConfig:
    return RunConfig(model=MODEL, shifts="demo", methods=DEMO_METHODS, layer="best", limit=limit, data_dir="demo",
                     out=out / (f"run-limit{limit}" if limit else "run"), store_root=str(out / "stores"))


def demo_command(config: RunConfig) -> str:
    return (f"genies run --model {config.model} --shifts {config.shifts} --data-dir {config.data_dir} "
            f"--methods {','.join(config.methods)} --layer {config.layer} --limit {config.limit} "
            f"--store-root {config.store_root} --out {config.out}")


def layer_sweep_plot(config: RunConfig, out: Path) -> Path:
    """Accuracy by layer on the source's validation split, its test split and the target's test split."""
    source, target = SWEEP_SHIFT

    def store(dataset: str, split: str) -> StoreSource:
        return StoreSource(store_url(config.resolved_store_root, config.model, dataset, split, "plain",
                                     prompt_format=config.prompt_format), config.limit)

    methods = [make_probe(m) for m in DEMO_METHODS if registry.get(m).takes_layer]
    train = store(source, "train")
    sweep = run_sweep(train, [("source test", store(source, "test")), ("target", store(target, "test"))], methods,
                      sweep_layers(train, methods), SweepConfig(seed=config.seed))
    n_layers = train.meta.get("model_n_blocks")
    return plot_sweep(sweep.rows, sweep.eval_names, out / f"sweep-{source}-to-{target}.png",
                      best={b.method: b.layer for b in sweep.best}, n_layers=int(n_layers) if n_layers else None,
                      title=f"{config.model}: {source} -> {target} (layer chosen on {source} validation)")
