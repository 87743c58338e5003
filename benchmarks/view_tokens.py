"""Tokens the model runs for the views of a `genies run`, one view at a time against together.

    python benchmarks/view_tokens.py [--shifts genies] [--limit 100] [--views plain,yes,no] [--data-dir D]
        [--model smollm2-135m] [--json-out PATH]

Counts real tokens (no timing; only the tokenizer runs), three ways: each view alone with every
example's prompt once plus its responses (``alone``, the first prompt reuse); the views together
with the prompt once for all of them (``prompts_shared``); and the views
together through the prefix tree that extraction runs now, each token run shared by any of an
example's sequences computed once (``tree``, ``actstore.engine.prefix_tree``). Then the forward passes
and padded token slots that extraction plans (``prefix_tree.plan_passes``, per block of
``--block-size`` sequences, ``--batch-tokens`` per pass) for each view extracted alone and for
the views together, with the passes of each tree level (0 = prompts). The splits are those
`genies run` extracts (default methods, `--layer best`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributions.data import load_split, resolve_data_dir  # noqa: E402
from actstore.engine.batching import EncodedSequence  # noqa: E402
from actstore.models import ModelSpec, load_model  # noqa: E402
from actstore.engine.extraction import ExtractConfig  # noqa: E402
from actstore.engine.prefix_tree import ViewSequences, build_forest, plan_passes  # noqa: E402
from actstore.engine.prompt_reuse import group_by_prompt  # noqa: E402
from actstore.engine.sequence_table import sequence_table  # noqa: E402
from actstore.engine.views import VIEWS, encode  # noqa: E402
from genies.plan import DoneChecks, RunConfig, build_plan  # noqa: E402
from manifests import load_manifest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "genies-data"


def split_tokens(tokenizer, table, views: list[str], block_size: int, batch_tokens: int) -> dict:
    encoded = {view: [EncodedSequence(*map(tuple, encode(tokenizer, VIEWS[view], table.prompts[i], table.responses[i])))
                      for i in range(len(table))] for view in views}
    groups = [group.members for group in group_by_prompt(encoded[views[0]])]
    prompts = sum(len(encoded[views[0]][members[0]].prompt_ids) for members in groups)
    responses = {view: sum(len(s.continuation_ids) for s in sequences) for view, sequences in encoded.items()}
    tree = build_forest(groups, [ViewSequences(view, encoded[view], False, False) for view in views])
    passes = {view: planned_passes({view: encoded[view]}, block_size, batch_tokens) for view in views}
    passes["together"] = planned_passes(encoded, block_size, batch_tokens)
    return {"prompt_tokens": prompts, "response_tokens": responses, "alone": sum(prompts + n for n in responses.values()),
            "prompts_shared": prompts + sum(responses.values()), "tree": tree.computed_tokens(), "passes": passes}


def planned_passes(encoded: dict[str, list[EncodedSequence]], block_size: int, batch_tokens: int) -> dict:
    """Tokens, passes (per tree level) and padded slots that extraction runs for these views together."""
    total = {"tokens": 0, "passes": 0, "slots": 0, "passes_per_level": {}}
    n_sequences = len(next(iter(encoded.values())))
    for start in range(0, n_sequences, block_size):
        block = {view: sequences[start:start + block_size] for view, sequences in encoded.items()}
        groups = [group.members for group in group_by_prompt(next(iter(block.values())))]
        forest = build_forest(groups, [ViewSequences(view, sequences, False, False) for view, sequences in block.items()])
        total["tokens"] += forest.computed_tokens()
        for planned in plan_passes(forest, batch_tokens):
            total["passes"] += 1
            total["slots"] += planned.slots
            levels = total["passes_per_level"]
            levels[planned.level] = levels.get(planned.level, 0) + 1
    return total


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shifts", default="genies")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--views", default="plain,yes,no")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir")
    parser.add_argument("--block-size", type=int, default=ExtractConfig.block_size)
    parser.add_argument("--batch-tokens", type=int, default=ExtractConfig.batch_tokens)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir or (SHARED_DATA if SHARED_DATA.is_dir() else None))
    views = [v.strip() for v in args.views.split(",")]
    config = RunConfig(model=args.model, shifts=args.shifts, limit=args.limit, data_dir=str(data_dir), out=Path("unused"))
    plan = build_plan(config, load_manifest(args.shifts), DoneChecks(store_complete=lambda url: False))
    splits = sorted({(s.dataset, s.split) for s in plan.stores})
    tokenizer = load_model(ModelSpec(args.model)).tokenizer
    rows = {f"{d}/{s}": split_tokens(tokenizer, sequence_table(load_split(data_dir, d, s), args.limit), views,
                                     args.block_size, args.batch_tokens)
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
    print(f"\nforward passes and padded token slots planned (--block-size {args.block_size}, "
          f"--batch-tokens {args.batch_tokens}):")
    print("| extraction | tokens | passes | passes per tree level (0 = prompts) | padded slots | real / slots |")
    print("| --- | --- | --- | --- | --- | --- |")
    passes = {}
    for name in [*views, "together"]:
        counts = [row["passes"][name] for row in rows.values()]
        levels: dict[int, int] = {}
        for count in counts:
            for level, n in count["passes_per_level"].items():
                levels[level] = levels.get(level, 0) + n
        passes[name] = {"tokens": sum(c["tokens"] for c in counts), "passes": sum(c["passes"] for c in counts),
                        "slots": sum(c["slots"] for c in counts), "passes_per_level": dict(sorted(levels.items()))}
    passes["one at a time"] = {key: sum(passes[v][key] for v in views) for key in ("tokens", "passes", "slots")}
    for name, count in passes.items():
        label = f"{name} alone" if name in views else (f"{','.join(views)} together" if name == "together" else
                                                       "one at a time (sum)")
        per_level = " / ".join(str(n) for n in count.get("passes_per_level", {}).values()) or "-"
        print(f"| {label} | {count['tokens']:,} | {count['passes']:,} | {per_level} | {count['slots']:,} | "
              f"{count['tokens'] / count['slots']:.0%} |")
    ratio = {key: passes["one at a time"][key] / passes["together"][key] for key in ("tokens", "passes", "slots")}
    print(f"| ratio (one at a time / together) | {ratio['tokens']:.2f}x | {ratio['passes']:.2f}x | | "
          f"{ratio['slots']:.2f}x | |")
    report = {"limit": args.limit, "views": views, "splits": rows, **totals, "planned": passes}
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
