"""Loading and extraction at scale: random-init LLaMA shapes saved as bfloat16 safetensors.

    python benchmarks/model_scale.py [--shapes 135m,1.1b] [--work DIR] [--modes memory,offload,4bit]
        [--json-out PATH]

Each shape is built once under --work (seeded random weights, byte-level tokenizer, bfloat16
safetensors). For each (shape, mode) a fresh child process loads the model through
``actstore.models.ModelSpec`` and extracts ``--limit`` examples of a small GENIES-format
distribution at one layer, so the child's peak resident memory (``getrusage``) is that one
configuration's alone. Modes: ``memory`` (the whole model on the device), ``offload``
(``--max-memory`` as given by ``--offload-max-memory``, default ``cpu=1GiB``, and an offload
directory), ``4bit`` / ``8bit`` (bitsandbytes). Reported: weights on disk, load time, peak host
RSS and its ratio to the weights, peak GPU memory (where there is a GPU), the weights placed on
disk, and extraction sequences/s. A table is printed and the rows written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int = 32000


SHAPES = {
    "135m": Shape(hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, vocab=49152),  # SmolLM2-135M
    "1.1b": Shape(hidden=2048, layers=22, heads=32, kv_heads=4, intermediate=5632),  # TinyLlama-1.1B
    "3b": Shape(hidden=3200, layers=26, heads=32, kv_heads=32, intermediate=8640),  # OpenLLaMA-3B
    "7b": Shape(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008),  # LLaMA-7B
}
MODES = {
    "memory": {},
    "offload": {"offload": True},
    "8bit": {"quantization": "8bit"},
    "4bit": {"quantization": "4bit"},
}
DATASET = "scale"
EXTRACT_LAYER = 10


def save_random_llama(directory: Path, shape: Shape, seed: int = 0) -> Path:
    """A seeded random-init LlamaForCausalLM of ``shape``, written as bfloat16 safetensors with a byte-level
    tokenizer (built in bfloat16, so building it costs the weights' bytes once)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from actstore.models import byte_tokenizer

    if (directory / "config.json").is_file():
        return directory
    tokenizer = byte_tokenizer()
    config = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, dtype="bfloat16")
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    staging = directory.with_name(directory.name + ".tmp")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.replace(directory)
    return directory


def write_data(root: Path, n_examples: int = 8) -> Path:
    """A small GENIES-format distribution: byte-level prompts of ~150 tokens, 3 responses each."""
    directory = root / "distributions" / DATASET
    directory.mkdir(parents=True, exist_ok=True)
    examples = [{"prompt": f"Question {i}: a traveller walks {i + 3} km north and {2 * i + 1} km east. "
                           f"How far is the traveller from the start, in a straight line?\n### Response:\n",
                 "responses": {f"About {i + 4} km.": 1.0, "It cannot be known.": 0.0, f"{7 * i} km, roughly.": 0.0}}
                for i in range(n_examples)]
    for split in ("train", "test"):
        (directory / f"{split}.json").write_text(json.dumps(examples))
    return root


def weights_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


def child(request: dict) -> dict:
    """One configuration, in this (fresh) process: load, extract, report peak memory."""
    import torch

    from actstore.engine.extraction import ExtractConfig, extract
    from actstore.models import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec.requested(request["model"], compute_dtype="bfloat16", device_map=request.get("device_map"),
                               max_memory=request.get("max_memory"), offload_dir=request.get("offload_dir"),
                               quantization=request.get("quantization", "none"))
    started = time.perf_counter()
    loaded = spec.load()
    load_s = time.perf_counter() - started
    results = extract(ExtractConfig(model=request["model"], datasets=(DATASET,), splits=("test",),
                                    layers=str(EXTRACT_LAYER), limit=request["limit"], out=request["out"],
                                    data_dir=request["data_dir"], compute_dtype="bfloat16", progress=False,
                                    quantize=spec.quantization), loaded=loaded)
    gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return {"load_s": load_s, "disk_bytes": bytes_on_disk(loaded.model), "sequences": results[0].sequences_computed, "extract_s": results[0].seconds,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_gpu_bytes": gpu,
            "device_map": spec.device_map, "store": results[0].url}


def bytes_on_disk(model) -> int:
    """Bytes of the weights accelerate placed on disk (each parameter goes where its deepest mapped module goes)."""
    placement = getattr(model, "hf_device_map", None) or {}

    def device_of(name: str) -> str:
        owners = [key for key in placement if key == "" or name == key or name.startswith(key + ".")]
        return str(placement[max(owners, key=len)]) if owners else "?"

    return sum(p.numel() * p.element_size() for name, p in model.named_parameters() if device_of(name) == "disk")


def measure(shape_name: str, mode: str, model_dir: Path, work: Path, limit: int, offload_max_memory: str) -> dict:
    settings = MODES[mode]
    request = {"model": str(model_dir), "limit": limit, "data_dir": str(work / "data"),
               "out": tempfile.mkdtemp(prefix=f"stores-{shape_name}-{mode}-", dir=work),
               "quantization": settings.get("quantization", "none")}
    if settings.get("offload"):
        request["max_memory"] = offload_max_memory
        request["offload_dir"] = tempfile.mkdtemp(prefix="offload-", dir=work)
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(request)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"shape": shape_name, "mode": mode, "error": tail}
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    size = weights_bytes(model_dir)
    return {"shape": shape_name, "mode": mode, "weights_bytes": size, **measured,
            "rss_over_weights": measured["peak_rss_bytes"] / size,
            "sequences_per_s": measured["sequences"] / measured["extract_s"] if measured["extract_s"] else None}


def print_table(rows: list[dict]) -> None:
    columns = ["shape", "mode", "weights", "load s", "peak RSS", "RSS/weights", "peak GPU", "on disk", "seq/s", "placement"]
    gib = 1024 ** 3
    lines = [columns]
    for r in rows:
        if "error" in r:
            lines.append([r["shape"], r["mode"], "", "", "", "", "", "", "", r["error"][:80]])
            continue
        lines.append([r["shape"], r["mode"], f"{r['weights_bytes'] / gib:.2f} GiB", f"{r['load_s']:.1f}",
                      f"{r['peak_rss_bytes'] / gib:.2f} GiB", f"{r['rss_over_weights']:.2f}x",
                      f"{r['peak_gpu_bytes'] / gib:.2f} GiB" if r["peak_gpu_bytes"] else "-",
                      f"{r['disk_bytes'] / gib:.2f} GiB", f"{r['sequences_per_s']:.2f}", r["device_map"]])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(columns))]
    for line in lines:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="135m,1.1b")
    parser.add_argument("--modes", default="memory,offload")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "model-scale"))
    parser.add_argument("--limit", type=int, default=2, help="Examples extracted per configuration.")
    parser.add_argument("--offload-max-memory", default="cpu=1GiB",
                        help="--max-memory of the offload mode (on a GPU machine e.g. 0=2GiB,cpu=2GiB).")
    parser.add_argument("--json-out", default="model_scale.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    write_data(work / "data")
    rows = []
    for shape_name in args.shapes.split(","):
        model_dir = save_random_llama(work / f"llama-{shape_name}", SHAPES[shape_name])
        for mode in args.modes.split(","):
            rows.append(measure(shape_name, mode, model_dir, work, args.limit, args.offload_max_memory))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print_table(rows)
    Path(args.json_out).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
