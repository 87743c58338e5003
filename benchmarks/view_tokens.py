"""Tokens the model runs for the views of a `genies run`, one view at a time against together.

    python benchmarks/view_tokens.py [--shifts genies] [--limit 100] [--views plain,yes,no] [--data-dir D]
        [--model smollm2-135m] [--json-out PATH]

Counts real tokens only (no padding, no timing; only the tokenizer runs), three ways: each view
alone with every example's prompt once plus its responses (``alone``, the reuse of issue 3);
the views together with the prompt once for all of them (``prompts_shared``, issue 14's first
step); and the views together through the prefix tree that extraction runs now, each token run
shared by any of an example's sequences computed once (``tree``, ``actstore.prefix_tree``).
The splits are those `genies run` extracts (default methods, `--layer best`).
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
from actstore.batching import EncodedSequence  # noqa: E402
from actstore.models import ModelSpec, load_model  # noqa: E402
from actstore.prefix_tree import ViewSequences, build_forest  # noqa: E402
from actstore.prompt_reuse import group_by_prompt  # noqa: E402
from actstore.sequence_table import sequence_table  # noqa: E402
from actstore.views import VIEWS, encode  # noqa: E402
from genies.plan import DoneChecks, RunConfig, build_plan  # noqa: E402
from manifests import load_manifest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "genies-data"


def split_tokens(tokenizer, table, views: list[str]) -> dict:
    encoded = {view: [EncodedSequence(*map(tuple, encode(tokenizer, VIEWS[view], table.prompts[i], table.responses[i])))
                      for i in range(len(table))] for view in views}
    groups = [group.members for group in group_by_prompt(encoded[views[0]])]
    prompts = sum(len(encoded[views[0]][members[0]].prompt_ids) for members in groups)
    responses = {view: sum(len(s.continuation_ids) for s in sequences) for view, sequences in encoded.items()}
    tree = build_forest(groups, [ViewSequences(view, encoded[view], False, False) for view in views])
    return {"prompt_tokens": prompts, "response_tokens": responses, "alone": sum(prompts + n for n in responses.values()),
            "prompts_shared": prompts + sum(responses.values()), "tree": tree.computed_tokens()}


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
    tokenizer = load_model(ModelSpec(args.model)).tokenizer
    rows = {f"{d}/{s}": split_tokens(tokenizer, sequence_table(load_split(data_dir, d, s), args.limit), views)
            for d, s in splits}
    totals = {key: sum(r[key] for r in rows.values()) for key in ("alone", "prompts_shared", "tree")}
    print(f"{len(rows)} splits, views {','.join(views)}, --limit {args.limit}: tokens computed")
    print("| one view at a time | views together, prompts shared | views together, prefix tree | alone / tree |")
    print("| --- | --- | --- | --- |")
    print(f"| {totals['alone']:,} | {totals['prompts_shared']:,} | {totals['tree']:,} | "
          f"{totals['alone'] / totals['tree']:.2f}x |")
    ratios = {name: row["alone"] / row["tree"] for name, row in rows.items()}
    for label, name in (("lowest", min(ratios, key=ratios.get)), ("highest", max(ratios, key=ratios.get))):
        print(f"  {label} alone / tree: {name} {ratios[name]:.2f}x")
    report = {"limit": args.limit, "views": views, "splits": rows, **totals}
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
