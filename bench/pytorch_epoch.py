#!/usr/bin/python3
"""Driver for bench/pytorch_epoch.sh: runs EPOCHS epochs of examples/pytorch/train_imagefolder.py's
loop (ImageFolder of raw bytes, DataLoader, a fixed sleep per batch) and prints one JSON object
per epoch. Before each epoch it evicts the origin's files from the page cache (so the origin
is read from the disk, not from memory, as from a remote store; the rest of the page cache,
torch's libraries included, stays), and it reports the bytes the cgroup CGROUP read from the
disk during the epoch.

    pytorch_epoch.py ROOT --sampler plan|shuffle --evict ORIGIN --epochs 3 --batch-size 32 \
        --workers 4 --compute-ms 10 --blkio-cgroup /sys/fs/cgroup/blkio/tc-bench-torch
"""
import argparse
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "pytorch"))
import train_imagefolder as train  # noqa: E402
from train_imagefolder import find_mount_root  # noqa: E402 (tiercache.torch's)


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
    ap.add_argument("--sampler", choices=["plan", "shuffle"], required=True)
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

    ds = train.make_dataset(args.root)
    loader, _ = train.make_loader(ds, args.sampler, args.batch_size, args.workers, args.seed)
    mount_root = find_mount_root(args.root)
    for epoch in range(args.epochs):
        if args.evict:
            evict(args.evict)
        before = disk_read_bytes(args.blkio_cgroup)
        r = train.run_epoch(loader, epoch, args.compute_ms / 1000, mount_root)
        r["disk_read_bytes"] = disk_read_bytes(args.blkio_cgroup) - before
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
