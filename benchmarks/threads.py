"""Extraction seconds with 1 thread and with every core, quiet and with other jobs on the cores.

    python benchmarks/threads.py [--dataset alpaca_mmlu --split test --limit 30] [--competitors 2]
        [--json-out PATH]

The other jobs are processes that each multiply matrices on one thread, started by this script
(``--competitors`` of them) for the contended half, so the contention is the same on every
machine. Each runs in a session of its own, as another user's job would: Linux's autogroup
scheduling shares the cores between sessions first, so jobs started as this process's children
would only compete inside its own share. The thread count ``--threads`` would choose by default (``actstore.engine.threads.free_cores``)
is shown beside each condition, read after the competitors have run for a minute's load average
to rise (``--settle`` seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from actstore.models import ModelSpec, load_model  # noqa: E402
from actstore.engine.threads import free_cores, usable_cores  # noqa: E402
from tree_attention import SHARED_DATA, timed_extraction  # noqa: E402


BUSY = "import torch; torch.set_num_threads(1); a = torch.randn(512, 512)\nwhile True: a = torch.tanh(a @ a)"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="alpaca_mmlu")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--views", default="plain,yes,no")
    parser.add_argument("--compute-dtype", default="bfloat16")
    parser.add_argument("--data-dir", default=str(SHARED_DATA))
    parser.add_argument("--competitors", type=int, default=2)
    parser.add_argument("--settle", type=float, default=60.0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    loaded = load_model(ModelSpec(args.model, compute_dtype=args.compute_dtype))
    views = tuple(args.views.split(","))
    counts = sorted({1, usable_cores()})
    args.threads = usable_cores()
    timed_extraction(loaded, args, views, level_by_level=False)  # warm-up
    rows = []
    for competitors in (0, args.competitors):
        jobs = [subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True) for _ in range(competitors)]
        if competitors:
            time.sleep(args.settle)
        chosen = free_cores()
        try:
            for threads in counts:
                args.threads = threads
                run = timed_extraction(loaded, args, views, level_by_level=False)
                rows.append({"other_jobs": competitors, "threads": threads, "seconds": round(run["seconds"], 2),
                             "default_would_choose": chosen, "load_average": round(os.getloadavg()[0], 2)})
                print(rows[-1], flush=True)
        finally:
            for job in jobs:
                job.kill()
                job.wait()
    print("| other jobs | threads | seconds | --threads default would choose |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['other_jobs']} | {row['threads']} | {row['seconds']} | {row['default_would_choose']} |")
    result = {"split": f"{args.dataset}/{args.split}", "limit": args.limit, "views": args.views, "rows": rows}
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
