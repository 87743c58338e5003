"""What bfloat16 compute costs on a real model: the same sequences extracted in float32 and in
bfloat16 (float32 storage for both, so only the compute differs), compared.

    python benchmarks/bf16_deviation.py [--model smollm2-135m] [--dataset alpaca_mmlu] [--split test]
        [--limit 50] [--data-dir D] [--json-out PATH]

Printed and written as JSON: per layer, the deviation |bf16 - fp32| relative to the layer's RMS
(median and max over all values); the log-likelihoods' absolute deviation in nats (median, max;
the LM head and log-softmax run in float32 for both); and zero-shot agreement: the fraction of
examples whose top-scored response is the same, and of (preferred, other) pairs whose order is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from actstore import open_store  # noqa: E402
from distributions.data import resolve_data_dir  # noqa: E402
from actstore.engine.extraction import ExtractConfig, extract  # noqa: E402
from actstore.models import load_model  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "genies-data"


def extracted(args, dtype: str, out: Path):
    config = ExtractConfig(model=args.model, datasets=(args.dataset,), splits=(args.split,), views=("plain",),
                           limit=args.limit, data_dir=str(args.data_dir), out=str(out / dtype), dtype="float32",
                           compute_dtype=dtype, device="cpu", progress=False)
    loaded = load_model(args.model, dtype=getattr(torch, dtype), device="cpu")
    [result] = extract(config, loaded=loaded)
    return open_store(result.url)


def compare(reference, other) -> dict:
    layers = []
    for layer in reference.layers:
        expected, got = reference.activations(layer), other.activations(layer)
        rms = float(np.sqrt(np.mean(expected.astype(np.float64) ** 2)))
        relative = np.abs(got - expected) / rms
        layers.append({"layer": layer, "rms": rms, "median": float(np.median(relative)), "max": float(relative.max())})
    sequences = reference.sequences()
    loglik_f32, loglik_bf16 = sequences["loglik"], other.sequences()["loglik"]
    deviation = np.abs(loglik_bf16 - loglik_f32)
    example, score = sequences["example"], sequences["score"]
    same_top, pairs_same, pairs = 0, 0, 0
    examples = np.unique(example)
    for e in examples:
        rows = np.flatnonzero(example == e)
        same_top += int(np.argmax(loglik_f32[rows]) == np.argmax(loglik_bf16[rows]))
        best = rows[score[rows] == 1.0]
        for other_row in rows[score[rows] != 1.0]:
            for b in best:
                pairs += 1
                pairs_same += int(np.sign(loglik_f32[b] - loglik_f32[other_row]) ==
                                  np.sign(loglik_bf16[b] - loglik_bf16[other_row]))
    return {"layers": layers,
            "loglik_nats": {"median": float(np.median(deviation)), "max": float(deviation.max()),
                            "mean_abs_fp32": float(np.mean(np.abs(loglik_f32)))},
            "zero_shot": {"examples": int(len(examples)), "same_top_response": same_top, "pairs": pairs,
                          "same_pair_order": pairs_same}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="alpaca_mmlu")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--data-dir")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    args.data_dir = resolve_data_dir(args.data_dir or (SHARED_DATA if SHARED_DATA.is_dir() else None))
    with tempfile.TemporaryDirectory(prefix="bf16-deviation-") as out:
        report = compare(extracted(args, "float32", Path(out)), extracted(args, "bfloat16", Path(out)))
    report = {"model": args.model, "dataset": args.dataset, "split": args.split, "limit": args.limit, **report}
    print(f"{args.model}, {args.dataset}/{args.split} --limit {args.limit}: bfloat16 compute against float32")
    print("| layer | RMS | median dev / RMS | max dev / RMS |")
    print("| --- | --- | --- | --- |")
    for row in report["layers"]:
        print(f"| {row['layer']} | {row['rms']:.3g} | {row['median']:.4f} | {row['max']:.3f} |")
    loglik, zero_shot = report["loglik_nats"], report["zero_shot"]
    print(f"log-likelihood |bf16 - fp32|: median {loglik['median']:.3f} nats, max {loglik['max']:.3f} nats "
          f"(mean |loglik| {loglik['mean_abs_fp32']:.1f})")
    print(f"zero-shot: same top response in {zero_shot['same_top_response']}/{zero_shot['examples']} examples, "
          f"same order in {zero_shot['same_pair_order']}/{zero_shot['pairs']} (preferred, other) pairs")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
