"""Time the report's bootstrap (genies/uncertainty.py) at the size of a `--methods all` GENIES run.

15 GENIES shifts x 12 methods with random per-example outcomes (1-3 pairs per example), N test
examples per split. Prints a table and writes JSON. Usage:

    python benchmarks/report_bootstrap.py [N ...] [--json OUT]      # default N: 100 1000
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from genies.generalization import ZERO_SHOT, Evaluation, rows_with_evaluations
from genies.uncertainty import INTERVAL_METRICS, N_BOOTSTRAP, RunBootstrap
from manifests import load_manifest
from common.metrics import ExampleOutcomes
from registry import method_sets


def synthetic_evaluations(n_examples: int, methods: tuple[str, ...], seed: int = 0) -> list[Evaluation]:
    rng = np.random.default_rng(seed)
    found: dict[tuple[str, str, str], Evaluation] = {}

    def add(method: str, trained_on: str, tested_on: str) -> None:
        if (method, trained_on, tested_on) not in found:
            pairs = rng.integers(1, 4, n_examples)
            outcomes = ExampleOutcomes(np.arange(n_examples), pairs, rng.binomial(pairs, 0.5).astype(float))
            found[(method, trained_on, tested_on)] = Evaluation(method, trained_on, tested_on, outcomes.accuracy,
                                                                outcomes=outcomes)

    for shift in load_manifest("genies"):
        add(ZERO_SHOT, "", shift.target)
        for method in methods:
            add(method, shift.source, shift.target)
            add(method, shift.source, shift.source)
            add(method, shift.reference, shift.reference)
    return list(found.values())


def measure(n_examples: int) -> dict:
    methods = method_sets()["all"]
    evaluations = synthetic_evaluations(n_examples, methods)
    found = rows_with_evaluations(load_manifest("genies"), evaluations, methods)
    began = time.perf_counter()
    bootstrap = RunBootstrap([row for row, _ in found], {row.key: e for row, e in found})
    replicates = time.perf_counter() - began
    began = time.perf_counter()
    for method in methods:
        for metric in INTERVAL_METRICS:
            bootstrap.mean_interval(method, metric)
    bootstrap.differences("generalization_accuracy")
    bootstrap.differences("differential_elicitation")
    bootstrap.zero_shot_correlation()
    for row, _ in found:
        for metric in INTERVAL_METRICS:
            bootstrap.row_interval(row, metric)
    intervals = time.perf_counter() - began
    return {"examples_per_split": n_examples, "rows": len(found), "evaluations": len(evaluations),
            "replicates": N_BOOTSTRAP, "replicates_s": round(replicates, 2), "intervals_s": round(intervals, 2)}


def main(argv: list[str]) -> None:
    out = argv[argv.index("--json") + 1] if "--json" in argv else "report_bootstrap.json"
    sizes = [int(a) for a in argv if a.isdigit()] or [100, 1000]
    results = [measure(n) for n in sizes]
    columns = list(results[0])
    print("  ".join(columns))
    for result in results:
        print("  ".join(str(result[c]).ljust(len(c)) for c in columns))
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
