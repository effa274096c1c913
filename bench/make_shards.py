#!/usr/bin/env python3
"""Writes a WebDataset-style dataset: tar shards whose members are samples' parts.

Each sample KEY is two consecutive members, KEY.jpg (random bytes of a JPEG's size: 110 KiB on
average, 20 KiB to 400 KiB) and KEY.cls (its class, a few bytes), as WebDataset writes them.
Shards fill to --shard-bytes, and there are as many as make --total-bytes. The same seed gives
the same bytes on every machine (Python's random module, seeded).

  bench/make_shards.py DIR --total-bytes 1073741824 [--shard-bytes 134217728] [--seed 7]
"""
import argparse
import io
import os
import random
import sys
import tarfile


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--total-bytes", type=int, required=True)
    ap.add_argument("--shard-bytes", type=int, default=128 << 20)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    if a.total_bytes <= 0 or a.shard_bytes <= 0:
        sys.exit("make_shards: --total-bytes and --shard-bytes must be positive")
    os.makedirs(a.dir, exist_ok=True)
    rng = random.Random(a.seed)
    written = samples = shard = 0
    while written < a.total_bytes:
        path = os.path.join(a.dir, f"shard-{shard:05d}.tar")
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            in_shard = 0
            while in_shard < a.shard_bytes and written + in_shard < a.total_bytes:
                key = f"{samples:08d}"
                size = min(400 << 10, max(20 << 10, int(rng.lognormvariate(11.5, 0.5))))
                for name, data in ((key + ".jpg", rng.randbytes(size)), (key + ".cls", str(rng.randrange(1000)).encode())):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))
                    in_shard += 512 + (len(data) + 511) // 512 * 512
                samples += 1
        written += os.path.getsize(path)
        shard += 1
    print(f"make_shards: {shard} shards, {samples} samples, {written} bytes in {a.dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
