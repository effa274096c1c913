#!/usr/bin/python3
"""A training loop over ImageFolder on a tiercache mount, with TiercacheSampler writing each
epoch's order to the mount's plan. Compute is simulated by a fixed sleep per batch, so what it
measures is how long the loop waits for data.

    train_imagefolder.py /mnt/ds/train --epochs 3 --batch-size 64 --workers 4 --compute-ms 20
    train_imagefolder.py /mnt/ds/train --sampler shuffle     # DataLoader(shuffle=True): no plan

Per epoch it prints the epoch time, the time blocked waiting for the next batch, the stall
fraction (wait / epoch time) and, on a mount, what the cache did in that epoch (origin bytes,
hit rates, prefetch counters from MOUNT/.tiercache/stats).

`--loader bytes` (the default) hands each file's raw bytes to the model as a uint8 tensor:
`tiercache gen` makes JPEG-sized files with a JFIF header but noise inside, which do not
decode, and reading raw bytes keeps the measurement about I/O. `--loader pil` decodes real
JPEGs (torchvision's default loader, then Resize/CenterCrop/ToTensor).
"""
import argparse
import json
import os
import sys
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

try:
    from tiercache.torch import TiercacheSampler, find_mount_root
except ImportError as e:  # a source checkout: the package is in the build tree until installed
    sys.exit(f"train_imagefolder.py: {e}: install tiercache (cmake --install BUILD) or set PYTHONPATH=BUILD/python")


def read_bytes(path):
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)


def collate_bytes(batch):
    """Variable-length samples: a list of byte tensors and a tensor of targets."""
    return [x for x, _ in batch], torch.tensor([y for _, y in batch])


def make_dataset(root, loader="bytes"):
    if loader == "bytes":
        return datasets.ImageFolder(root, loader=read_bytes)
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    return datasets.ImageFolder(root, transform=tf)


def make_loader(ds, sampler_kind, batch_size, workers, seed=0, loader="bytes"):
    """(DataLoader, TiercacheSampler or None). sampler_kind: "plan" or "shuffle"."""
    collate = collate_bytes if loader == "bytes" else None
    if sampler_kind == "plan":
        sampler = TiercacheSampler(ds, seed=seed)
        return DataLoader(ds, batch_size=batch_size, num_workers=workers, sampler=sampler, collate_fn=collate), sampler
    torch.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, num_workers=workers, shuffle=True, collate_fn=collate), None


def read_stats(mount_root):
    if mount_root is None:
        return None
    with open(os.path.join(mount_root, ".tiercache", "stats")) as f:
        return json.load(f)


def stats_delta(before, after):
    """What the cache did between two stats snapshots."""
    if before is None or after is None:
        return None
    d = {"origin_bytes": after["origin"]["bytes_read"] - before["origin"]["bytes_read"],
         "origin_reads": after["origin"]["reads"] - before["origin"]["reads"], "hit_rate": {}}
    for tier, t in after["tiers"].items():
        hits = t["hits"] - before["tiers"][tier]["hits"]
        misses = t["misses"] - before["tiers"][tier]["misses"]
        d["hit_rate"][tier] = hits / (hits + misses) if hits + misses else None
    if "prefetch" in after:
        d["prefetch"] = {k: v - before["prefetch"].get(k, 0) for k, v in after["prefetch"].items()
                         if isinstance(v, int) and not isinstance(v, bool)}
    if "plan" in after:
        d["plan"] = after["plan"]
    return d


def run_epoch(loader, epoch, compute_s, mount_root=None):
    """One epoch: returns {"epoch", "samples", "epoch_s", "wait_s", "stall", "cache"}."""
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    before = read_stats(mount_root)
    wait = 0.0
    samples = 0
    start = time.perf_counter()
    it = iter(loader)  # starts the workers; TiercacheSampler writes the plan here
    while True:
        t = time.perf_counter()
        try:
            xs, _ = next(it)
        except StopIteration:
            wait += time.perf_counter() - t
            break
        wait += time.perf_counter() - t
        samples += len(xs)
        time.sleep(compute_s)  # the model's step
    epoch_s = time.perf_counter() - start
    return {"epoch": epoch, "samples": samples, "epoch_s": epoch_s, "wait_s": wait, "stall": wait / epoch_s,
            "cache": stats_delta(before, read_stats(mount_root))}


def describe(r):
    line = (f"epoch {r['epoch']}: {r['samples']} samples in {r['epoch_s']:.2f} s, waited {r['wait_s']:.2f} s "
            f"for data, stall {r['stall']:.1%}")
    c = r["cache"]
    if c:
        rates = ", ".join(f"{t} {h:.1%}" if h is not None else f"{t} -" for t, h in c["hit_rate"].items())
        line += f"\n  origin {c['origin_bytes'] / 2**20:.1f} MiB in {c['origin_reads']} reads; hit rate {rates}"
        if "prefetch" in c:
            line += "\n  prefetch " + ", ".join(f"{k} {v}" for k, v in c["prefetch"].items())
        if "plan" in c:
            p = c["plan"]
            line += f"\n  plan {p.get('state')} ({p.get('kind')}, {p.get('samples')} samples, position {p.get('position')})"
    return line


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default="/mnt/ds/train", help="an ImageFolder root (default /mnt/ds/train)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--compute-ms", type=float, default=20.0, help="simulated compute per batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sampler", choices=["plan", "shuffle"], default="plan",
                    help="plan: TiercacheSampler writes the order to the mount; shuffle: DataLoader(shuffle=True)")
    ap.add_argument("--loader", choices=["bytes", "pil"], default="bytes")
    ap.add_argument("--json", action="store_true", help="one JSON object per epoch instead of text")
    args = ap.parse_args()

    ds = make_dataset(args.root, args.loader)
    loader, _ = make_loader(ds, args.sampler, args.batch_size, args.workers, args.seed, args.loader)
    mount_root = find_mount_root(args.root)
    for epoch in range(args.epochs):
        r = run_epoch(loader, epoch, args.compute_ms / 1000, mount_root)
        print(json.dumps(r) if args.json else describe(r), flush=True)


if __name__ == "__main__":
    main()
