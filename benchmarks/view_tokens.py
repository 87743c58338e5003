"""Tokens the model runs for the views of a `genies run`, one view at a time against together.

    python benchmarks/view_tokens.py [--shifts genies] [--limit 100] [--views plain,yes,no] [--data-dir D]
        [--model smollm2-135m] [--json-out PATH]

Counts real tokens only (no padding, no timing; only the tokenizer runs): with prompt reuse, one
view alone runs each example's prompt once plus its responses; views together run the prompt
once for all of them. The splits are those `genies run` extracts (default methods, `--layer best`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genies.data import load_split, resolve_data_dir  # noqa: E402
from actstore.models import load_model  # noqa: E402
from actstore.sequence_table import sequence_table  # noqa: E402
from actstore.views import VIEWS, encode  # noqa: E402
from genies.plan import DoneChecks, RunConfig, build_plan  # noqa: E402
from manifests import load_manifest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "genies-data"


def split_tokens(tokenizer, table, views: list[str]) -> dict:
    prompts, responses = 0, dict.fromkeys(views, 0)
    for i in range(len(table)):
        first = i == 0 or table.example[i] != table.example[i - 1]
        for view in views:
            prompt_ids, continuation = encode(tokenizer, VIEWS[view], table.prompts[i], table.responses[i])
            responses[view] += len(continuation)
        prompts += len(prompt_ids) if first else 0
    alone = sum(prompts + n for n in responses.values())
    return {"prompt_tokens": prompts, "response_tokens": responses, "alone": alone,
            "together": prompts + sum(responses.values())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shifts", default="genies")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--views", default="plain,yes,no")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir or (SHARED_DATA if SHARED_DATA.is_dir() else None))
    views = [v.strip() for v in args.views.split(",")]
    config = RunConfig(model=args.model, shifts=args.shifts, limit=args.limit, data_dir=str(data_dir), out=Path("unused"))
    plan = build_plan(config, load_manifest(args.shifts), DoneChecks(store_complete=lambda url: False))
    splits = sorted({(s.dataset, s.split) for s in plan.stores})
    tokenizer = load_model(args.model, device="cpu").tokenizer
    rows = {f"{d}/{s}": split_tokens(tokenizer, sequence_table(load_split(data_dir, d, s), args.limit), views)
            for d, s in splits}
    alone, together = sum(r["alone"] for r in rows.values()), sum(r["together"] for r in rows.values())
    print(f"{len(rows)} splits, views {','.join(views)}, --limit {args.limit}: {alone} tokens one view at a time, "
          f"{together} together: {alone / together:.2f}x")
    worst = min(rows.items(), key=lambda item: item[1]["alone"] / item[1]["together"])
    best = max(rows.items(), key=lambda item: item[1]["alone"] / item[1]["together"])
    for name, row in (("lowest", worst), ("highest", best)):
        print(f"  {name} ratio: {row[0]} {row[1]['alone'] / row[1]['together']:.2f}x")
    report = {"limit": args.limit, "views": views, "splits": rows, "alone": alone, "together": together,
              "ratio": alone / together}
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
