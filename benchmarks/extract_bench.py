"""Extraction speed, side by side with the naive loop, in one process and one run.

    python benchmarks/extract_bench.py [--model M] [--dataset alpaca_mmlu] [--split test] [--limit N]
        [--device D] [--data-dir D] [--json-out PATH] [--ablations]

(a) the naive loop: one sequence per forward pass, float32, ``output_hidden_states=True``, the
LM head over every position, the last token of every hidden state kept (and the response's
log-likelihood read from the full logits);
(b) ``actstore extract`` (all layers, plain view) on the same sequences, with its defaults
(compute dtype and prompt reuse chosen for the device); ``--ablations`` adds a run with prompt
reuse switched the other way and one in float32 without it, so each speed-up is measured on its
own in the same run. Each extraction gets an untimed warm-up on a few examples first.
``--multi-view`` instead times views plain, yes and no extracted in one command against the three
one at a time (same model, same run, default settings; after an untimed round, ``--rounds``
repetitions alternating the order, the best wall and CPU time of each kept), with the forward passes and the token slots
(padding included) the model ran, counted at its first block.

Printed as a table and written as JSON: sequences/s, tokens/s, the ratio to the naive loop,
the prefill FLOP rate (2 x non-embedding parameters x tokens / time) as a fraction of a matrix
multiply rate measured here for the dtype in use, peak memory, store bytes per sequence and the
time split. The device is chosen like ``actstore extract`` does (``--device`` overrides).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from actstore.models.compute_dtype import resolve_compute_dtype, torch_dtype  # noqa: E402
from actstore.models.devices import default_device  # noqa: E402
from distributions.data import load_split, resolve_data_dir  # noqa: E402
from actstore.engine.extraction import ExtractConfig, extract  # noqa: E402
from actstore.models import ModelSpec, load_model  # noqa: E402
from actstore.engine.sequence_table import sequence_table  # noqa: E402
from actstore.engine.stage_clock import clock_for  # noqa: E402
from actstore.engine.views import VIEWS, encode  # noqa: E402

WARMUP_EXAMPLES = 2
MULTI_VIEWS = ("plain", "yes", "no")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "genies-data"


@dataclass
class Run:
    name: str
    dtype: str
    prompt_reuse: bool
    sequences: int
    tokens: int  # tokens of the full sequences
    computed_tokens: int  # tokens the model actually ran (fewer with prompt reuse)
    seconds: float
    matmul_flops: float  # measured just before this run, for its dtype
    body_parameters: int
    peak_memory_bytes: int | None
    peak_gpu_bytes: int | None = None
    store_bytes_per_sequence: float | None = None
    time_split_s: dict[str, float] = field(default_factory=dict)

    @property
    def sequences_per_second(self) -> float:
        return self.sequences / self.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def prefill_flops(self) -> float:
        """Useful work per second: the prefill of every sequence's tokens, however it was computed."""
        return 2 * self.body_parameters * self.tokens / self.seconds

    @property
    def computed_flops(self) -> float:
        return 2 * self.body_parameters * self.computed_tokens / self.seconds

    def summary(self) -> dict:
        return {**asdict(self), "sequences_per_second": self.sequences_per_second,
                "tokens_per_second": self.tokens_per_second, "prefill_flops": self.prefill_flops,
                "prefill_fraction_of_matmul": self.prefill_flops / self.matmul_flops,
                "computed_flops": self.computed_flops,
                "computed_fraction_of_matmul": self.computed_flops / self.matmul_flops}


# ----------------------------------------------------------------------------- measurements


def matmul_flops(dtype: torch.dtype, device: torch.device, seconds: float = 2.0) -> float:
    """Sustained rate of square matrix multiplies in ``dtype`` (best of a few timed stretches)."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    clock = clock_for(device)
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            a @ b
            count += 1
            if clock.synchronize:
                clock.synchronize()
        best = max(best, 2 * n ** 3 * count / (time.perf_counter() - start))
    return best


class PeakMemory:
    """Peak resident memory of this process since ``reset`` (Linux), and the GPU's peak allocation."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        gc.collect()
        try:  # "5" resets the high-water mark VmHWM to the current RSS
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_rss(self) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def peak_gpu(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None


def load(args, dtype: torch.dtype, device: torch.device):
    """The model; with ``--random-init``, its architecture only (``--model`` is then a directory with
    config and tokenizer), for timing on a machine the weights cannot be copied to."""
    if not args.random_init:
        return load_model(ModelSpec(args.model, compute_dtype=str(dtype).removeprefix("torch."), device_map=str(device)))
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from actstore.models import LoadedModel

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.model), dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model.eval(), tokenizer, args.model, f"{args.model} (random init)")


def body_parameters(model: torch.nn.Module) -> int:
    """Parameters of the transformer blocks and final norm: what a token's prefill multiplies by."""
    body = model.get_decoder()
    return sum(p.numel() for name, p in body.named_parameters() if not name.startswith("embed_tokens"))


# ----------------------------------------------------------------------------- the two contenders


def naive_loop(loaded, prompts, responses, device: torch.device) -> tuple[float, dict[str, float]]:
    """One sequence per forward pass through the whole causal LM, everything kept."""
    view, model, tokenizer = VIEWS["plain"], loaded.model, loaded.tokenizer
    clock = clock_for(device)
    kept = []
    started = time.perf_counter()
    with torch.inference_mode():
        for prompt, response in zip(prompts, responses):
            with clock.stage("tokenize"):
                prompt_ids, continuation = encode(tokenizer, view, prompt, response)
                ids = torch.tensor([prompt_ids + continuation], device=device)
            with clock.stage("forward"):
                out = model(ids, output_hidden_states=True)
            with clock.stage("gather"):
                hidden = torch.stack([h[0, -1] for h in out.hidden_states]).float().cpu().numpy()
                logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
                targets = ids[0, len(prompt_ids):]
                loglik = float(logprobs[len(prompt_ids) - 1:-1].gather(1, targets[:, None]).sum())
                kept.append((hidden, loglik))
    return time.perf_counter() - started, clock.totals()


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def store_size(url: str) -> int:
    return sum(path.stat().st_size for path in Path(url).rglob("*") if path.is_file())


def run_extract(name: str, args, out_root: Path, device: torch.device, memory: PeakMemory, n_tokens: int,
                computed_tokens: int, *, compute_dtype: str, prompt_reuse: bool = True) -> Run:
    config = ExtractConfig(model=args.model, datasets=(args.dataset,), splits=(args.split,), views=("plain",),
                           limit=args.limit, data_dir=str(args.data_dir), out=str(out_root / slug(name)), device=str(device),
                           compute_dtype=compute_dtype, prompt_reuse=prompt_reuse, batch_tokens=args.batch_tokens,
                           progress=False)
    dtype = resolve_compute_dtype(compute_dtype, str(device))
    rate_before = matmul_flops(torch_dtype(dtype), device)
    loaded = load(args, torch_dtype(dtype), device)
    parameters = body_parameters(loaded.model)
    # Untimed warm-up on a few examples: kernel selection and allocator growth happen once per
    # process, and the naive loop amortizes them over its many passes.
    extract(replace(config, limit=WARMUP_EXAMPLES, out=str(out_root / f"{slug(name)}-warmup")), loaded=loaded)
    memory.reset()
    [result] = extract(config, loaded=loaded)
    # The better of the rates measured before and after: on a shared machine, the fraction errs low.
    rate = max(rate_before, matmul_flops(torch_dtype(dtype), device))
    run = Run(name, dtype, prompt_reuse, result.sequences_computed, n_tokens, computed_tokens if prompt_reuse else n_tokens,
              result.seconds, rate, parameters, memory.peak_rss(), memory.peak_gpu(),
              store_size(result.url) / result.n_sequences, asdict(result.timings))
    del loaded
    return run


def multi_view(args, device: torch.device, out_root: Path) -> list[dict]:
    """plain, yes and no one at a time and in one command, ``--rounds`` times alternating which goes
    first; the best (lowest) wall and CPU time of each over the rounds, with its passes and token slots."""
    dtype = resolve_compute_dtype("auto", str(device))
    loaded = load(args, torch_dtype(dtype), device)
    passes_and_slots = []
    hook = loaded.model.get_decoder().layers[0].register_forward_pre_hook(
        lambda module, inputs: passes_and_slots.append(inputs[0].shape[:2].numel()))

    def config(views: tuple[str, ...], out: Path, limit: int | None) -> ExtractConfig:
        return ExtractConfig(model=args.model, datasets=(args.dataset,), splits=(args.split,), views=views, limit=limit,
                             data_dir=str(args.data_dir), out=str(out), device=str(device),
                             batch_tokens=args.batch_tokens, progress=False)

    def timed(name: str, views: tuple[str, ...], out: Path) -> dict:
        passes_and_slots.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        results = extract(config(views, out / slug(name), args.limit), loaded=loaded)
        return {"run": name, "views": list(views), "seconds": time.perf_counter() - wall,
                "cpu_seconds": time.process_time() - cpu, "sequences": sum(r.sequences_computed for r in results),
                "passes": len(passes_and_slots), "token_slots": sum(passes_and_slots)}

    measured: dict[str, list[dict]] = {}
    runs = [(f"{view} alone", (view,)) for view in MULTI_VIEWS] + [("plain,yes,no together", MULTI_VIEWS)]
    try:
        # Warm-up: the whole measurement once, untimed. On CPUs the bfloat16 kernels are built per
        # new matrix shape, so the first run over these sequences is slower, whichever comes first.
        for name, views in runs:
            timed(name, views, out_root / "warmup")
        for round_ in range(args.rounds):
            for name, views in (runs if round_ % 2 == 0 else runs[::-1]):
                measured.setdefault(name, []).append(timed(name, views, out_root / f"round{round_}"))
    finally:
        hook.remove()
    best = {name: {**rows[0], "seconds": min(r["seconds"] for r in rows),
                   "cpu_seconds": min(r["cpu_seconds"] for r in rows), "rounds": [r["seconds"] for r in rows]}
            for name, rows in measured.items()}
    alone, together = [best[f"{view} alone"] for view in MULTI_VIEWS], best["plain,yes,no together"]
    total = {"run": "one at a time (sum)", "views": list(MULTI_VIEWS),
             **{key: sum(row[key] for row in alone) for key in ("seconds", "cpu_seconds", "sequences", "passes",
                                                                 "token_slots")}}
    for row in (*alone, total, together):
        row.update(dtype=dtype, prompt_reuse=True)
    together["x one at a time"] = {key: total[key] / together[key]
                                   for key in ("seconds", "cpu_seconds", "passes", "token_slots")}
    return [*alone, total, together]


def multi_view_table(rows: list[dict]) -> str:
    lines = ["| run | dtype | reuse | seq/s | wall s (best) | CPU s (best) | passes | token slots | wall ratio | CPU ratio "
             "| pass ratio | slot ratio |", "| --- " * 12 + "|"]
    for row in rows:
        ratio = row.get("x one at a time")
        ratios = [f"{ratio[k]:.2f}x" for k in ("seconds", "cpu_seconds", "passes", "token_slots")] if ratio else [""] * 4
        lines.append(f"| {row['run']} | {row['dtype']} | {'yes' if row['prompt_reuse'] else 'no'} | "
                     f"{row['sequences'] / row['seconds']:.2f} | {row['seconds']:.1f} | {row['cpu_seconds']:.1f} | "
                     f"{row['passes']} | {row['token_slots']} | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- report


def table(runs: list[Run]) -> str:
    naive = runs[0]
    header = ["run", "dtype", "reuse", "seq/s", "tokens/s", "x naive", "prefill GFLOP/s", "matmul GFLOP/s", "prefill/matmul",
              "computed/matmul", "peak RSS MiB", "peak GPU MiB", "store B/seq", "tokenize/forward/gather/write s"]
    rows = [header]
    for run in runs:
        split = run.time_split_s
        rows.append([
            run.name, run.dtype, "yes" if run.prompt_reuse else "no", f"{run.sequences_per_second:.2f}", f"{run.tokens_per_second:.0f}",
            f"{run.sequences_per_second / naive.sequences_per_second:.2f}", f"{run.prefill_flops / 1e9:.1f}",
            f"{run.matmul_flops / 1e9:.1f}", f"{run.prefill_flops / run.matmul_flops:.0%}",
            f"{run.computed_flops / run.matmul_flops:.0%}",
            f"{run.peak_memory_bytes / 2**20:.0f}" if run.peak_memory_bytes else "-",
            f"{run.peak_gpu_bytes / 2**20:.0f}" if run.peak_gpu_bytes else "-",
            f"{run.store_bytes_per_sequence:.0f}" if run.store_bytes_per_sequence else "-",
            "/".join(f"{split.get(k + '_s', 0.0):.2f}" for k in ("tokenize", "forward", "gather", "write")),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "| " + " | ".join("-" * width for width in widths) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="alpaca_mmlu")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, help="first N examples (all when omitted)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--data-dir", help=f"GENIES data directory (default: {SHARED_DATA} if present)")
    parser.add_argument("--batch-tokens", type=int, default=ExtractConfig.batch_tokens)
    parser.add_argument("--ablations", action="store_true",
                        help="also run extraction without prompt reuse, and in float32 without prompt reuse")
    parser.add_argument("--multi-view", action="store_true",
                        help="only time views plain,yes,no in one command against one at a time")
    parser.add_argument("--rounds", type=int, default=3, help="--multi-view: repetitions (the best of each is kept)")
    parser.add_argument("--random-init", action="store_true",
                        help="random weights of --model's architecture (a directory with config.json and tokenizer)")
    parser.add_argument("--json-out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    args.data_dir = args.data_dir or (SHARED_DATA if SHARED_DATA.is_dir() else None)
    args.data_dir = resolve_data_dir(args.data_dir)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device or default_device())
    if args.multi_view:
        with tempfile.TemporaryDirectory(prefix="extract-bench-") as out_root:
            rows = multi_view(args, device, Path(out_root))
        report = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "model": args.model,
                  "dataset": args.dataset, "split": args.split, "limit": args.limit, "device": str(device),
                  "load_average": os.getloadavg(), "multi_view": rows}
        print(f"{args.model} on {device}: {args.dataset}/{args.split}, limit {args.limit}")
        print(multi_view_table(rows))
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(json.dumps(report, indent=1))
        return report
    memory = PeakMemory(device)
    split = load_split(args.data_dir, args.dataset, args.split)
    rows = sequence_table(split, args.limit)

    loaded = load(args, torch.float32, device)
    view = VIEWS["plain"]
    encoded = [encode(loaded.tokenizer, view, p, r) for p, r in zip(rows.prompts, rows.responses)]
    n_tokens = sum(len(p) + len(c) for p, c in encoded)
    # With prompt reuse, each example's prompt runs once, plus every response.
    first_of_example = [i == 0 or rows.example[i] != rows.example[i - 1] for i in range(len(encoded))]
    computed_tokens = sum(len(c) + (len(p) if first else 0) for (p, c), first in zip(encoded, first_of_example))

    rate = matmul_flops(torch.float32, device)
    naive_loop(loaded, rows.prompts[:WARMUP_EXAMPLES * 4], rows.responses[:WARMUP_EXAMPLES * 4], device)
    memory.reset()
    seconds, split_s = naive_loop(loaded, rows.prompts, rows.responses, device)
    rate = max(rate, matmul_flops(torch.float32, device))
    runs = [Run("naive loop", "float32", False, len(encoded), n_tokens, n_tokens, seconds, rate, body_parameters(loaded.model),
                memory.peak_rss(), memory.peak_gpu(), None, split_s)]
    del loaded

    variants = [("actstore extract", "auto", True)]  # the prefix tree, on every device
    if args.ablations:
        variants += [("  --no-prompt-reuse", "auto", False), ("  float32, --no-prompt-reuse", "float32", False)]
    with tempfile.TemporaryDirectory(prefix="extract-bench-") as out_root:
        for name, compute_dtype, reuse in variants:
            runs.append(run_extract(name, args, Path(out_root), device, memory, n_tokens, computed_tokens,
                                    compute_dtype=compute_dtype, prompt_reuse=reuse))

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    report = {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "model": args.model, "random_init": args.random_init, "dataset": args.dataset, "split": args.split, "limit": args.limit,
        "device": device_name, "torch": torch.__version__, "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "sequences": len(encoded), "tokens": n_tokens, "computed_tokens_with_prompt_reuse": computed_tokens,
        "runs": [run.summary() for run in runs],
    }
    print(f"{args.model} on {device_name}: {args.dataset}/{args.split}, {len(encoded)} sequences, {n_tokens} tokens "
          f"({computed_tokens} with prompt reuse)")
    print(table(runs))
    print("RESULT: " + "; ".join(result_line(run) for run in runs))  # benchmarks/gpu_check.sh's table
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=1))
    return report


def result_line(run: Run) -> str:
    """One run in a few numbers: useful and computed tokens/s, the share of the matmul rate, peak memory."""
    peak = run.peak_gpu_bytes if run.peak_gpu_bytes is not None else run.peak_memory_bytes
    where = "GPU" if run.peak_gpu_bytes is not None else "RSS"
    return (f"{run.name.strip()}: {run.tokens_per_second:.0f} tok/s useful, "
            f"{run.computed_tokens / run.seconds:.0f} computed, {100 * run.computed_flops / run.matmul_flops:.1f}% "
            f"of matmul, peak {where} {(peak or 0) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
