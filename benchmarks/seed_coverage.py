"""Do a run's intervals hold what a rerun moves? Two `genies run`s that differ only in `--seed`, compared row by row.

    python benchmarks/seed_coverage.py RUN_A RUN_B [--json-out PATH]

For every (shift, method) row of a fitted method (a probe fitted from stores, random included), the rerun's
difference |a - b| of generalization accuracy is covered when it lies within the two rows' intervals combined,
sqrt(half_a^2 + half_b^2). Printed per method and overall, with how each run's intervals were formed
(results.csv's interval_covers); and whether random's interval contains chance (0.5) on every shift. Written as
JSON with --json-out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import registry  # noqa: E402
from genies.results_csv import load_run  # noqa: E402
from registry import Kind  # noqa: E402

METRIC = "generalization_accuracy"


def half_width(row) -> float:
    low, high = row.interval(METRIC)
    return math.nan if low is None or high is None else (high - low) / 2


def coverage(run_a: Path, run_b: Path) -> dict:
    rows_a = {row.key: row for row in load_run(run_a)}
    rows_b = {row.key: row for row in load_run(run_b)}
    per_method: dict[str, dict] = {}
    for key in rows_a.keys() & rows_b.keys():
        a, b = rows_a[key], rows_b[key]
        spec = registry.all_methods().get(a.method)
        if spec is None or spec.kind is not Kind.PROBE:
            continue
        allowed = math.hypot(half_width(a), half_width(b))
        moved = abs(getattr(a, METRIC) - getattr(b, METRIC))
        found = per_method.setdefault(a.method, {"rows": 0, "covered": 0, "max_ratio": 0.0,
                                                 "interval_covers": a.interval_covers})
        found["rows"] += 1
        found["covered"] += int(moved <= allowed + 1e-12)
        ratio = moved / allowed if allowed > 0 else (0.0 if moved == 0 else math.inf)
        found["max_ratio"] = max(found["max_ratio"], ratio)
    rows = sum(m["rows"] for m in per_method.values())
    covered = sum(m["covered"] for m in per_method.values())
    chance = {name: all(r.interval(METRIC)[0] <= 0.5 <= r.interval(METRIC)[1]
                        for r in (rows_a if name == "a" else rows_b).values() if r.method == "random")
              for name in ("a", "b")}
    return {"run_a": str(run_a), "run_b": str(run_b), "per_method": dict(sorted(per_method.items())), "rows": rows,
            "covered": covered, "coverage": covered / rows if rows else math.nan,
            "random_contains_chance_on_every_shift": chance}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    found = coverage(args.run_a, args.run_b)
    print(f"{'method':<10} {'rows':>5} {'covered':>8} {'max |a-b| / allowed':>20}  intervals hold")
    for method, m in found["per_method"].items():
        print(f"{method:<10} {m['rows']:>5} {m['covered'] / m['rows']:>8.0%} {m['max_ratio']:>20.2f}  "
              f"{m['interval_covers']}")
    print(f"{'all':<10} {found['rows']:>5} {found['coverage']:>8.0%}")
    print(f"random's interval contains 0.5 on every shift: {found['random_contains_chance_on_every_shift']}")
    if args.json_out:
        args.json_out.write_text(json.dumps(found, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
