"""Refit a run's probes at that run's own layers on other stores: is a difference layers or values?

    python benchmarks/refit_at_layers.py RESULTS_CSV STORE_ROOT [--against OTHER_STORE_ROOT] [--limit 100]
        [--json-out PATH]

For every probe row of RESULTS_CSV (a `genies run` results.csv: source, target, method, layer,
generalization_accuracy), fits the method at that row's layer on STORE_ROOT's source train
store(s) and scores it on the target's test store(s), with the current code (seed 0, as
`genies run`). Without ``--against`` it compares with the CSV's own accuracy: when two runs
disagree, equal numbers here say the layers made the difference. With ``--against`` it fits the
same on both store roots (shifts whose stores exist in both) and compares them: two extractions
of the same data that differ only in float rounding (say, bfloat16 batches of other shapes).
STORE_ROOT is the model's directory in a store root (STORE_ROOT/DATASET/SPLIT.limitN.VIEW.zarr).
Prints one row per method (mean, largest per-shift difference, Pearson r) and writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import registry  # noqa: E402
from actstore import open_store  # noqa: E402
from probes import make_probe  # noqa: E402


def accuracy_at(root: Path, row: dict, limit: int) -> float:
    views = registry.get(row["method"]).views

    def stores(dataset: str, split: str):
        return [open_store(str(root / dataset / f"{split}.limit{limit}.{view}.zarr")) for view in views]

    probe = make_probe(row["method"], int(row["layer"]), seed=0).fit(stores(row["source"], "train"))
    return probe.score(stores(row["target"], "test"), n_bootstrap=0).accuracy


def has_stores(root: Path, row: dict, limit: int) -> bool:
    return all((root / dataset / f"{split}.limit{limit}.{view}.zarr").is_dir()
               for dataset, split in ((row["source"], "train"), (row["target"], "test"))
               for view in registry.get(row["method"]).views)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_csv", type=Path)
    parser.add_argument("store_root", type=Path)
    parser.add_argument("--against", type=Path, help="a second store root to refit on (instead of the CSV's accuracies)")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    rows = [row for row in csv.DictReader(args.results_csv.open()) if row["layer"]]
    if args.against:
        rows = [row for row in rows if has_stores(args.against, row, args.limit)]
    pairs: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        reference = (accuracy_at(args.against, row, args.limit) if args.against
                     else float(row["generalization_accuracy"]))
        pairs.setdefault(row["method"], []).append((reference, accuracy_at(args.store_root, row, args.limit)))
        print(f"  {row['method']} {row['source']} -> {row['target']} layer {row['layer']}: "
              f"{pairs[row['method']][-1][0]:.4f} {pairs[row['method']][-1][1]:.4f}", flush=True)
    reference_name = str(args.against) if args.against else f"{args.results_csv} as reported"
    print(f"\nreference: {reference_name}; refit: {args.store_root}; each at the CSV's layers")
    print("| method | shifts | reference mean | refit mean | largest per-shift difference | Pearson r |")
    print("| --- | --- | --- | --- | --- | --- |")
    summary = {}
    for method, values in pairs.items():
        reference, refit = np.array(values).T
        r = float(np.corrcoef(reference, refit)[0, 1]) if len(values) > 1 else float("nan")
        summary[method] = {"shifts": len(values), "reference_mean": float(reference.mean()),
                           "refit_mean": float(refit.mean()), "max_abs_difference": float(np.abs(reference - refit).max()),
                           "pearson_r": r, "pairs": values}
        print(f"| {method} | {len(values)} | {reference.mean():.3f} | {refit.mean():.3f} | "
              f"{np.abs(reference - refit).max():.3f} | {r:.3f} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
