#!/usr/bin/python3
"""Driver for bench/pytorch_epoch.sh: runs EPOCHS epochs of examples/pytorch/train_imagefolder.py's
loop (a DataLoader, a fixed sleep per batch) and prints one JSON object per epoch. Before each
epoch it evicts the origin's files from the page cache (so the origin is read from the disk,
not from memory, as from a remote store; the rest of the page cache, torch's libraries
included, stays), and it reports the bytes the cgroup CGROUP read from the disk during the epoch.

The loader (--loader):
  imagefolder  torchvision ImageFolder over ROOT (a directory, or a tiercache mount of one) in a
               DataLoader(num_workers=WORKERS), its order from --sampler
  dataset      tiercache.torch.Dataset over tiercache.open(ROOT, dram=DRAM, share=SHARE) in the
               same DataLoader (shuffle=True): the workers attach to the shared cache; raw bytes
               are collated by tiercache.torch.collate (one tensor a batch from each worker)
  epochloader  tiercache.torch.EpochLoader over that Dataset (THREADS I/O threads, DEPTH batches
               ahead); with --decode its decode threads (one a CPU) decode each batch ahead of this loop
Samples are the files' raw bytes as uint8 tensors, or with --decode the decoded images:
torchvision.io.decode_jpeg, Resize(256), CenterCrop(224), float in [0, 1] (the same callable for
every loader; in the DataLoader's workers for the first two).

    pytorch_epoch.py ROOT --loader imagefolder --sampler plan|shuffle --evict ORIGIN --epochs 3 \
        --batch-size 32 --workers 4 --compute-ms 10 --blkio-cgroup /sys/fs/cgroup/blkio/tc-bench-torch
    pytorch_epoch.py ORIGIN --loader epochloader --decode --dram 1GiB --share NAME --threads 4 ...
"""
import argparse
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "pytorch"))
import torch  # noqa: E402
import train_imagefolder as train  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402
from torchvision.io import decode_jpeg  # noqa: E402
from train_imagefolder import find_mount_root  # noqa: E402 (tiercache.torch's)

import tiercache  # noqa: E402
import tiercache.torch  # noqa: E402

RESIZE = transforms.Compose([transforms.Resize(256, antialias=True), transforms.CenterCrop(224),
                             transforms.ConvertImageDtype(torch.float)])


def decode(data):
    """A JPEG's bytes (a uint8 tensor) as a user's transform has it: 3 x 224 x 224 floats."""
    return RESIZE(decode_jpeg(data))


def as_tensor(data):
    """bytes as a uint8 tensor, copied once as ImageFolder's raw-bytes loader does."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def read_decoded(path):  # ImageFolder's loader with --decode
    return decode(train.read_bytes(path))


def decode_bytes(data):  # tiercache.torch.Dataset's decode with --decode
    return decode(as_tensor(data))


class Batches:
    """Batches of tiercache.torch.Batch (from the EpochLoader, or a DataLoader collating with
    tiercache.torch.collate) as train.run_epoch takes a DataLoader: .sampler (set_epoch() where
    it has one), and batches as (samples, targets); the samples are the Batch itself (its views)
    or, decoding, the stacked decoded images (decoded by the EpochLoader's threads, ahead of this loop)."""

    def __init__(self, batches, sampler, decoding=False):
        self.batches, self.sampler, self.decoding = batches, sampler, decoding

    def __iter__(self):
        for batch in self.batches:
            yield (torch.stack(batch.samples) if self.decoding else batch), batch.targets


def disk_read_bytes(cgroup):
    """Bytes the cgroup's tasks read from block devices (blkio v1 throttle counters)."""
    total = 0
    with open(os.path.join(cgroup, "blkio.throttle.io_service_bytes")) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[1] == "Read":
                total += int(parts[2])
    return total


def evict(directory):
    """Drops the page cache of every file under `directory` (fadvise DONTNEED, after a sync:
    it drops clean pages only)."""
    os.sync()
    for parent, _, names in os.walk(directory):
        for name in names:
            fd = os.open(os.path.join(parent, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--loader", choices=["imagefolder", "dataset", "epochloader"], default="imagefolder")
    ap.add_argument("--sampler", choices=["plan", "shuffle"], default="shuffle", help="imagefolder's order")
    ap.add_argument("--decode", action="store_true", help="decode the JPEGs (else raw bytes)")
    ap.add_argument("--dram", default="1GiB", help="dataset, epochloader: the cache's DRAM tier")
    ap.add_argument("--share", help="dataset, epochloader: the cache's share name (the workers attach to it)")
    ap.add_argument("--threads", type=int, default=4, help="epochloader: I/O threads")
    ap.add_argument("--depth", type=int, default=4, help="epochloader: batches read ahead")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--compute-ms", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blkio-cgroup", required=True)
    ap.add_argument("--evict", help="the origin directory, evicted from the page cache before each epoch "
                    "(left out: the origin stays warm, as a local dataset in the page cache)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers on 2 CPUs, on purpose
    collation = "decoded" if args.decode else "bytes"  # train.make_loader: stacked tensors, or a list
    cache = None
    if args.loader == "imagefolder":
        ds = datasets.ImageFolder(args.root, loader=read_decoded) if args.decode else train.make_dataset(args.root)
        loader, _ = train.make_loader(ds, args.sampler, args.batch_size, args.workers, args.seed, collation)
    else:
        cache = tiercache.open(args.root, dram=args.dram, share=args.share)
        ds = tiercache.torch.Dataset(cache, decode=decode_bytes if args.decode else None)
        if args.loader == "dataset" and args.decode:
            loader, _ = train.make_loader(ds, "shuffle", args.batch_size, args.workers, args.seed, collation)
        elif args.loader == "dataset":  # raw bytes, as the package says to load them: one tensor a batch
            torch.manual_seed(args.seed)
            collated = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers, shuffle=True,
                                                   collate_fn=tiercache.torch.collate)
            loader = Batches(collated, collated.sampler)
        else:
            epochs = tiercache.torch.EpochLoader(ds, batch_size=args.batch_size, seed=args.seed, shuffle=True,
                                                 threads=args.threads, depth=args.depth, decode=decode if args.decode else None)
            loader = Batches(epochs, epochs, args.decode)
    mount_root = find_mount_root(args.root) if args.loader == "imagefolder" else None
    try:
        for epoch in range(args.epochs):
            if args.evict:
                evict(args.evict)
            before, cache_before = disk_read_bytes(args.blkio_cgroup), cache.stats() if cache else None
            r = train.run_epoch(loader, epoch, args.compute_ms / 1000, mount_root)
            r["disk_read_bytes"] = disk_read_bytes(args.blkio_cgroup) - before
            if cache:
                r["cache"] = train.stats_delta(cache_before, cache.stats())
            if args.loader == "epochloader":
                r["loader_stats"] = loader.sampler.stats()
            print(json.dumps(r), flush=True)
    finally:
        if cache:
            cache.close()


if __name__ == "__main__":
    main()
