"""Time `probes sweep` at the size of the real-store sweep in RESULTS.md, on synthetic stores of the real shape.

alpaca_mmlu train (600 examples x 4 responses = 2400 sequences) and three 1000-sequence test
stores (alpaca_mmlu, truthful_qa, spanish_output), SmolLM2-135M's shape (layers 0..30, d=576),
views plain/yes/no, float16 + blosc-zstd like `actstore extract`. Usage:

    python benchmarks/probe_sweep.py [ROOT]     # writes stores under ROOT (default: a temp dir)

then prints the `probes sweep` command and its wall time. With real stores, run the printed
command on them instead.

    python benchmarks/probe_sweep.py --ccs TRAIN_STORE [--json-out FILE]

times the CCS fit of every layer of a training store (any of its view stores; yes and no are
read) in one process, layer by layer alternating: before (the BLAS library's default thread
count) and after (one BLAS thread, the library's setting), and checks that both give bitwise the
same probe.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from actstore.store import StoreLayout, create_store

LAYERS = tuple(range(31))
HIDDEN = 576
MODEL = "smollm2-135m-synthetic"


def write_split(root: Path, dataset: str, split: str, n_examples: int, direction: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = n_examples * 4
    example = np.repeat(np.arange(n_examples), 4).astype(np.int32)
    best = rng.integers(0, 4, n_examples)
    score = (np.tile(np.arange(4), n_examples) == best[example]).astype(np.float32)
    truth = np.where(score == 1.0, 1.0, -1.0)[:, None]
    strength = 1.5 * np.exp(-((np.array(LAYERS) - 18) / 7.0) ** 2)  # signal peaks mid-depth
    for view in ("plain", "yes", "no"):
        layout = StoreLayout(n_sequences=n, layers=LAYERS, hidden_size=HIDDEN, with_loglik=view == "plain")
        store = create_store(f"{root}/{MODEL}/{dataset}/{split}.{view}.zarr", layout,
                             {"example": example, "response": np.tile(np.arange(4), n_examples).astype(np.int32),
                              "score": score},
                             {"model": MODEL, "model_id": MODEL, "dataset": dataset, "split": split, "view": view})
        for block in range(layout.n_blocks):
            start, stop = layout.block_range(block)
            rows = slice(start, stop)
            base = rng.standard_normal((len(LAYERS), stop - start, HIDDEN)).astype(np.float32)
            sign = {"plain": 1.0, "yes": 0.5, "no": -0.5}[view]
            signal = truth[rows] if view != "plain" else (truth[rows] > 0)
            base += (sign * strength[:, None, None] * signal[None] * direction).astype(np.float32)
            store.write_block(block, residual=base.astype(np.float16), final_norm=base[-1].astype(np.float16),
                              n_tokens=np.full(stop - start, 100, np.int32), last_token=np.zeros(stop - start, np.int32),
                              loglik=rng.standard_normal(stop - start) if view == "plain" else None)
        store.mark_complete()


def time_ccs(train_url: str) -> dict:
    from threadpoolctl import threadpool_info

    from probes.methods import ccs
    from probes.sources import StoreSource

    source = StoreSource(train_url)
    layers = sorted(set(source.layers("yes")) & set(source.layers("no")))
    seconds = {"before": 0.0, "after": 0.0}
    identical, accuracies = True, []
    for layer in layers:
        source.residual("yes", layer), source.residual("no", layer)  # read outside the clock
        probes = {}
        for name, threads in (("before", None), ("after", 1)):
            ccs.BLAS_THREADS = threads
            began = time.perf_counter()
            probes[name] = ccs.CCS(layer=layer).fit(source)
            seconds[name] += time.perf_counter() - began
        before, after = probes["before"].scorer_, probes["after"].scorer_
        identical &= bool(np.array_equal(before.weight, after.weight) and before.bias == after.bias
                          and before.sign == after.sign)
        margins = [p.margins(source) for p in probes.values()]
        accuracies.append([float(((m > 0) + 0.5 * (m == 0)).mean()) for m in margins])
        source.release()
    ccs.BLAS_THREADS = 1
    result = {"store": train_url, "n_sequences": len(source.labels.example), "layers": len(layers),
              "blas_default_threads": [info["num_threads"] for info in threadpool_info()],
              "before_s": round(seconds["before"], 2), "after_s": round(seconds["after"], 2),
              "speedup": round(seconds["before"] / seconds["after"], 2), "bitwise_identical": identical,
              "training_accuracy_equal": all(a == b for a, b in accuracies)}
    print("| store | layers | sequences | before s | after s | speedup | bitwise identical |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {train_url} | {len(layers)} | {result['n_sequences']} | {result['before_s']} | {result['after_s']} "
          f"| {result['speedup']}x | {identical} |")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", nargs="?")
    parser.add_argument("--ccs", help="time CCS fits on this training store instead of running the sweep")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if args.ccs:
        result = time_ccs(args.ccs)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=2))
        return
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="probe-sweep-"))
    direction = np.random.default_rng(0).standard_normal(HIDDEN)
    direction /= np.linalg.norm(direction)
    if not (root / MODEL).exists():
        write_split(root, "alpaca_mmlu", "train", 600, direction, 1)
        for seed, dataset in enumerate(("alpaca_mmlu", "truthful_qa", "spanish_output"), start=2):
            write_split(root, dataset, "test", 250, direction, seed)
    store = lambda d, s: f"{root}/{MODEL}/{d}/{s}.plain.zarr"  # noqa: E731
    command = [str(Path(sys.executable).parent / "probes"), "sweep", "--methods", "mms,lat,ccs,cra,logreg",
               "--train", store("alpaca_mmlu", "train"), "--eval", store("truthful_qa", "test"),
               "--eval", store("spanish_output", "test"), "--layers", "all", "--out", str(root / "sweep")]
    print(" ".join(command))
    began = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"wall time {time.perf_counter() - began:.1f} s (including interpreter start-up)")


if __name__ == "__main__":
    main()
