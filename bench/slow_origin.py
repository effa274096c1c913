#!/usr/bin/python3
"""The PyTorch side of bench/slow_origin.sh: a DataLoader(shuffle=True) over the files of
DATASET (regular files, sorted by relative path), whose Dataset sleeps --latency-ms before
reading each file's raw bytes (the origin's latency, injected as tiercache-bench-slow-origin
injects it into the cache's origin), and the loop of examples/pytorch/train_imagefolder.py: a
fixed sleep per batch for compute, the time blocked in next(iterator) counted as waiting.

    /usr/bin/python3 bench/slow_origin.py DATASET --latency-ms 2 --epochs 3 --batch 32 \
        --workers 4 --compute-ms 16 [--seed 1] [--json FILE]

Per epoch: epoch_s (iter(loader) included: the workers start there), wait_s, and
stall = wait_s / epoch_s. Nothing is cached between epochs: every read pays the latency, as
from a remote store (the bytes themselves come from the page cache, as the C++ side's do).
"""
import argparse
import json
import os
import sys
import time
import warnings

import torch
from torch.utils.data import Dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "pytorch"))
import train_imagefolder as train  # noqa: E402


def list_files(root):
    """Relative paths of the regular files under root (symlinks to regular files included, as
    the cache's catalog takes them), sorted."""
    paths = []
    for parent, dirs, names in os.walk(root):
        if parent == root and ".tiercache" in dirs:
            dirs.remove(".tiercache")  # a mount's control folder, never a sample
        for name in names:
            path = os.path.join(parent, name)
            if os.path.isfile(path):
                paths.append(os.path.relpath(path, root))
    return sorted(paths, key=os.fsencode)


class SlowFiles(Dataset):
    """Each item: (the file's bytes as a uint8 tensor, its index), after `latency_s` of sleep."""

    def __init__(self, root, latency_s):
        self.root = root
        self.paths = list_files(root)
        self.latency_s = latency_s

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        return train.read_bytes(os.path.join(self.root, self.paths[index])), index


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--latency-ms", type=float, default=2.0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--compute-ms", type=float, default=16.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the per-epoch figures here as JSON")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers on 2 CPUs, on purpose

    ds = SlowFiles(os.path.abspath(args.dataset), args.latency_ms / 1000)
    if len(ds) == 0:
        sys.exit(f"slow_origin.py: no files under {args.dataset}")
    loader, _ = train.make_loader(ds, "shuffle", args.batch, args.workers, args.seed)
    total = sum(os.path.getsize(os.path.join(ds.root, p)) for p in ds.paths)
    batches = -(-len(ds) // args.batch)
    print(f"{len(ds)} files ({total / 2**20:.1f} MiB), {args.latency_ms:g} ms per read; batch {args.batch}, "
          f"{args.compute_ms:g} ms compute a batch (no-stall floor {batches * args.compute_ms / 1000:.3f} s); "
          f"DataLoader(shuffle=True, num_workers={args.workers}), torch {torch.__version__}", flush=True)
    print(f"{'epoch':<6} {'epoch_s':>9} {'wait_s':>9} {'stall':>8}", flush=True)
    epochs = []
    for epoch in range(args.epochs):
        r = train.run_epoch(loader, epoch, args.compute_ms / 1000)
        if r["samples"] != len(ds):
            sys.exit(f"slow_origin.py: epoch {epoch + 1} gave {r['samples']} samples of {len(ds)}")
        r.pop("cache")
        r["epoch"] = epoch + 1
        epochs.append(r)
        print(f"{r['epoch']:<6} {r['epoch_s']:9.3f} {r['wait_s']:9.3f} {r['stall']:8.1%}", flush=True)
    if args.json:
        out = {"side": "pytorch", "dataset": ds.root, "samples": len(ds), "dataset_bytes": total,
               "latency_ms": args.latency_ms, "batch": args.batch, "compute_ms": args.compute_ms,
               "workers": args.workers, "seed": args.seed, "torch": torch.__version__, "epochs": epochs}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
