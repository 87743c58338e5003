"""Time one multi-view extraction of a split and count the forward passes and token slots it runs.

    python benchmarks/split_passes.py --dataset code_hard --split test --limit 50 [--views plain,yes,no]
        [--data-dir D] [--json-out PATH]

Run it at two commits (e.g. from a `git worktree` of each, with PYTHONPATH pointing there) to
compare extraction engines on the same split, one after the other on a quiet machine. Passes
and token slots (padding included) are counted at the first decoder block; rows are the rows
of all passes (prompt rows included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actstore.engine.extraction import ExtractConfig, extract  # noqa: E402
from actstore.models import ModelSpec, load_model  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "genies-data"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--views", default="plain,yes,no")
    parser.add_argument("--compute-dtype", default="bfloat16")
    parser.add_argument("--data-dir", default=str(SHARED_DATA))
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    loaded = load_model(ModelSpec(args.model, compute_dtype=args.compute_dtype))
    passes: list[tuple[int, int]] = []
    hook = loaded.model.model.layers[0].register_forward_pre_hook(lambda m, a: passes.append(tuple(a[0].shape[:2])))
    out = Path(tempfile.mkdtemp(prefix="split-passes-"))
    try:
        config = ExtractConfig(model=args.model, datasets=(args.dataset,), splits=(args.split,),
                               views=tuple(args.views.split(",")), limit=args.limit, data_dir=args.data_dir,
                               out=str(out), progress=False, prompt_reuse=True)
        started = time.perf_counter()
        results = extract(config, loaded=loaded)
        seconds = time.perf_counter() - started
    finally:
        hook.remove()
        shutil.rmtree(out, ignore_errors=True)
    row = {"split": f"{args.dataset}/{args.split}", "limit": args.limit, "views": args.views,
           "sequences": sum(r.sequences_computed for r in results), "seconds": round(seconds, 2),
           "passes": len(passes), "token_slots": sum(rows * width for rows, width in passes),
           "rows": sum(rows for rows, _ in passes), "pass_shapes": passes}
    print("| split | limit | views | sequences | seconds | passes | token slots | rows |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("| " + " | ".join(str(row[k]) for k in ("split", "limit", "views", "sequences", "seconds", "passes",
                                                  "token_slots", "rows")) + " |")
    if args.json_out:
        args.json_out.write_text(json.dumps(row, indent=1))
    return row


if __name__ == "__main__":
    main()
