"""What a local model's fingerprint costs: every byte of a checkpoint hashed once, then its digests reused.

Writes a checkpoint-shaped directory (a config and SHARDS safetensors-sized files of random bytes, GB in all)
under --work, then times ``model_fingerprint`` the first time (every byte read and hashed; the files were
just written, so part of them may still be in the page cache) and again (digests kept beside each file's
state: nothing read), and a plain read of the same bytes (no hashing), so the hash's own cost is visible.
The directory is deleted at the end. Usage:

    python benchmarks/fingerprint_cost.py [--gb 15] [--shards 4] [--work /tmp] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from actstore.models.fingerprint import model_fingerprint

BLOCK = 1 << 26  # bytes written at a time


def write_checkpoint(directory: Path, gb: float, shards: int) -> int:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    per_shard = int(gb * (1 << 30)) // shards
    block = os.urandom(BLOCK)
    for shard in range(shards):
        with open(directory / f"model-{shard + 1:05d}-of-{shards:05d}.safetensors", "wb") as handle:
            left = per_shard
            while left > 0:
                handle.write(block[:min(left, BLOCK)])
                left -= BLOCK
    return per_shard * shards


def plain_read_s(directory: Path) -> float:
    started = time.perf_counter()
    buffer = bytearray(1 << 23)
    for file in sorted(directory.iterdir()):
        with open(file, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=15.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--work", default=tempfile.gettempdir())
    parser.add_argument("--json", default="benchmarks/fingerprint_cost.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fingerprint-", dir=args.work))
    os.environ["GENIES_HOME"] = str(work / "home")  # a digest cache of its own: the first call reads everything
    try:
        size = write_checkpoint(work / "model", args.gb, args.shards)
        started = time.perf_counter()
        first = model_fingerprint(str(work / "model"))
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        again = model_fingerprint(str(work / "model"))
        again_s = time.perf_counter() - started
        assert first == again
        read_s = plain_read_s(work / "model")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [("first fingerprint (every byte hashed)", first_s, size / first_s / 1e9),
            ("plain read of the same bytes (no hash)", read_s, size / read_s / 1e9),
            ("again (digests reused)", again_s, None)]
    print(f"checkpoint: {size / (1 << 30):.1f} GiB in {args.shards} shards")
    print(f"{'what':<42} {'seconds':>9} {'GB/s':>7}")
    for what, seconds, rate in rows:
        print(f"{what:<42} {seconds:>9.3f} {'' if rate is None else f'{rate:.2f}':>7}")
    result = {"gib": size / (1 << 30), "shards": args.shards,
              "rows": [{"what": what, "seconds": round(seconds, 4), "gb_per_s": rate and round(rate, 3)}
                       for what, seconds, rate in rows]}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
