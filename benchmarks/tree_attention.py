"""Tree attention against the level-by-level prefix tree and against long unpadded passes, one process.

    python benchmarks/tree_attention.py --dataset alpaca_mmlu --split test --limit 100 \\
        [--model smollm2-135m] [--compute-dtype bfloat16] [--device cuda] [--attention flex_attention] \\
        [--data-dir D] [--json-out PATH]

Everything is measured in the same process, after one warm-up pass (the CPU's first bfloat16
pass builds its kernels: seconds), so the ratios hold on a noisy machine:

- ``long passes``: the model's full forward (LM head included) on random unpadded tokens, batch 1 x
  1024 to 32 x 64: the rate the machine gives this model;
- ``level by level``: the views extracted together, the tree run level by level on key/value caches
  (the path for attention implementations that take no mask);
- ``tree attention``: the same, each prompt group one flattened row (the default);
- ``one view at a time``: tree attention, each view its own extraction.

Computed tokens are the tree's real tokens (each shared prefix once); slots include padding.
``--attention`` sets the model's attention implementation as the commands take it (auto, the
default: sdpa on a CPU, flex_attention on a GPU; or sdpa, eager, flex_attention) and ``--device``
where it runs: on a GPU, run it once with sdpa and once with flex_attention to compare dense masked
SDPA with flex attention's block masks on the same split.
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

import torch  # noqa: E402

import actstore.engine.prompt_reuse as prompt_reuse  # noqa: E402
from actstore.engine.extraction import ExtractConfig, extract  # noqa: E402
from actstore.models import ModelSpec, load_model  # noqa: E402
from actstore.models.placement import ATTENTIONS  # noqa: E402
from actstore.engine.threads import usable_cores  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "genies-data"
LONG_SHAPES = ((1, 1024), (4, 512), (8, 512), (16, 128), (32, 64))


class Counter:
    """Passes and slots (at the first block), and the tree's real tokens (from the packing or the forest)."""

    def __init__(self, loaded):
        self.passes = self.slots = self.tokens = 0
        self.hook = loaded.model.get_decoder().layers[0].register_forward_pre_hook(self._count)
        self._pack, self._forest = prompt_reuse.pack_rows, prompt_reuse.build_forest
        prompt_reuse.build_forest = self._build_forest

    def _count(self, module, args):
        self.passes += 1
        self.slots += args[0].shape[0] * args[0].shape[1]

    def _build_forest(self, *args, **kwargs):
        forest = self._forest(*args, **kwargs)
        self.tokens += forest.computed_tokens()
        return forest

    def close(self):
        self.hook.remove()
        prompt_reuse.build_forest = self._forest


def synchronized(device: torch.device) -> float:
    """The time once the device has finished its queued work (a GPU runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def long_pass_rates(loaded, repeats: int = 2) -> dict[str, float]:
    model, device = loaded.model, loaded.input_device
    rates = {}
    with torch.inference_mode():
        for rows, width in LONG_SHAPES:
            ids = torch.randint(100, 20000, (rows, width), device=device)
            started = synchronized(device)
            for _ in range(repeats):
                model(input_ids=ids, use_cache=False)
            rates[f"{rows}x{width}"] = rows * width * repeats / (synchronized(device) - started)
    return rates


def timed_extraction(loaded, args, views: tuple[str, ...], *, level_by_level: bool) -> dict:
    counter = Counter(loaded)
    takes_masks = prompt_reuse.takes_tree_masks
    if level_by_level:
        prompt_reuse.takes_tree_masks = lambda config: False
    out = Path(tempfile.mkdtemp(prefix="tree-attention-"))
    try:
        config = ExtractConfig(model=args.model, datasets=(args.dataset,), splits=(args.split,), views=views,
                               limit=args.limit, data_dir=args.data_dir, out=str(out), progress=False,
                               prompt_reuse=True, compute_dtype=args.compute_dtype, threads=args.threads)
        started = synchronized(loaded.input_device)
        extract(config, loaded=loaded)
        seconds = synchronized(loaded.input_device) - started
    finally:
        prompt_reuse.takes_tree_masks = takes_masks
        counter.close()
        shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "passes": counter.passes, "slots": counter.slots, "tokens": counter.tokens}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="alpaca_mmlu")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--views", default="plain,yes,no")
    parser.add_argument("--compute-dtype", default="bfloat16")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--attention", default="auto", choices=ATTENTIONS,
                        help="the model's attention implementation, as `actstore extract --attention` takes it")
    parser.add_argument("--data-dir", default=str(SHARED_DATA))
    parser.add_argument("--threads", type=int, default=usable_cores(), help="torch threads (default: every core)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_model(ModelSpec(args.model, compute_dtype=args.compute_dtype, device_map=args.device,
                                  attention=args.attention))
    print(f"{args.model} on {loaded.input_device}, {loaded.attention} attention, "
          f"{args.compute_dtype}, {torch.get_num_threads()} thread(s)")
    views = tuple(args.views.split(","))
    long_pass_rates(loaded, repeats=1)  # warm-up
    timed_extraction(loaded, args, views[:1], level_by_level=False)  # warm-up of the extraction path
    runs = {} if loaded.attention == "flex_attention" else {  # the level-by-level path never runs under flex
        "level by level": timed_extraction(loaded, args, views, level_by_level=True)}
    runs["tree attention"] = timed_extraction(loaded, args, views, level_by_level=False)
    alone = [timed_extraction(loaded, args, (view,), level_by_level=False) for view in views]
    runs["one view at a time"] = {key: sum(run[key] for run in alone) for key in alone[0]}
    rates = long_pass_rates(loaded)
    reference = sorted(rates.values())[len(rates) // 2]
    print(f"long passes, tokens/s: " + ", ".join(f"{shape} {rate:.0f}" for shape, rate in rates.items())
          + f" (median {reference:.0f})")
    print("| engine | seconds | passes | slots | computed tokens | computed tokens/s | of long-pass median |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, run in runs.items():
        run["tokens_per_second"] = run["tokens"] / run["seconds"]
        run["of_long_pass_rate"] = run["tokens_per_second"] / reference
        print(f"| {name} | {run['seconds']:.1f} | {run['passes']} | {run['slots']:,} | {run['tokens']:,} | "
              f"{run['tokens_per_second']:.0f} | {run['of_long_pass_rate']:.0%} |")
    together = runs["tree attention"]["seconds"]
    print(f"views together vs one at a time: {runs['one view at a time']['seconds'] / together:.2f}x less time"
          + (f"; tree attention vs level by level: {runs['level by level']['seconds'] / together:.2f}x"
             if "level by level" in runs else ""))
    result = {"split": f"{args.dataset}/{args.split}", "limit": args.limit, "views": args.views,
              "model": args.model, "compute_dtype": args.compute_dtype, "threads": torch.get_num_threads(),
              "device": str(loaded.input_device), "attention": loaded.attention,
              "long_pass_rates": rates, "long_pass_median": reference, "runs": runs}
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
