"""What store integrity costs: `actstore info --verify` on a healthy store, and a checked layer
read against zarr's plain read of the same chunks.

The store has the bundled model's shape (layers 0..30, d=576, float16, blosc-zstd, blocks of 512,
log-likelihoods and final norm) with N sequences of random values, written block by block
through ``ActivationStore.write_block`` as extraction writes them. Usage:

    python benchmarks/verify_bench.py [--sequences 1000] [--repeats 5] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from actstore.store.info import verify_store
from actstore.store import StoreLayout, create_store, open_store

LAYERS = tuple(range(31))
HIDDEN = 576


def write_store(url: str, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    layout = StoreLayout(n_sequences=n, layers=LAYERS, hidden_size=HIDDEN, with_loglik=True)
    example = np.repeat(np.arange((n + 1) // 2), 2)[:n].astype(np.int32)
    labels = {"example": example, "response": (np.arange(n) % 2).astype(np.int32),
              "score": (np.arange(n) % 2 == 0).astype(np.float32)}
    store = create_store(url, layout, labels, {"model": "synthetic", "dataset": "bench", "split": "test", "view": "plain"})
    for block in range(layout.n_blocks):
        size = layout.block_length(block)
        store.write_block(block, residual=rng.standard_normal((len(LAYERS), size, HIDDEN), dtype=np.float32),
                          final_norm=rng.standard_normal((size, HIDDEN), dtype=np.float32),
                          n_tokens=np.full(size, 100, np.int32), last_token=np.zeros(size, np.int32),
                          loglik=-rng.random(size) * 50)
    store.mark_complete()


def best_of(repeats: int, action) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/verify_bench.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"{tmp}/test.plain.zarr"
        write_store(url, args.sequences)
        size = sum(p.stat().st_size for p in Path(url).rglob("*") if p.is_file())
        verify = best_of(args.repeats, lambda: verify_store(url))
        checked = best_of(args.repeats, lambda: open_store(url).activations(20))
        raw = best_of(args.repeats, lambda: np.asarray(zarr.open_group(url, mode="r")["residual"][20], dtype=np.float32))
    result = {"sequences": args.sequences, "layers": len(LAYERS), "hidden": HIDDEN, "store_bytes": size,
              "verify_s": round(verify, 4), "checked_layer_read_s": round(checked, 4), "raw_layer_read_s": round(raw, 4),
              "checked_over_raw": round(checked / raw, 2)}
    print(f"{'sequences':>10} {'store':>9} {'info --verify':>14} {'layer read (checked)':>21} {'layer read (zarr)':>18} {'ratio':>6}")
    print(f"{args.sequences:>10} {size / 2**20:>7.1f}MB {verify:>13.3f}s {checked:>20.4f}s {raw:>17.4f}s "
          f"{checked / raw:>6.2f}")
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
