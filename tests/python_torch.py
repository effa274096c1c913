#!/usr/bin/python3
"""tiercache.torch.Dataset under torch's DataLoader, no mount: an ImageFolder-style tree read
through the package, with 2 forked workers (each attaches to the test's shared owner, or opens
its own cache of a directory) and 2 spawned ones. Every epoch must see every sample exactly
once, with the origin's bytes and ImageFolder's class index; TiercacheSampler over the Dataset
gives its order to the cache (set_plan) and the loader follows it. A worker killed with SIGKILL
while attached harms neither the owner nor the next epoch's workers.

  python_torch.py                 PYTHONPATH holds the built package (BUILD/python).
                                  Exits 0 when all is well, 1 with what was wrong, 77 (skipped)
                                  when /usr/bin/python3 cannot import torch.
"""
import hashlib
import os
import random
import shutil
import signal
import sys
import tempfile

try:
    import torch
    from torch.utils.data import DataLoader
except ImportError as e:
    print(f"python_torch.py: SKIP: {e} (scripts/install-deps --torch installs python3-torch)")
    sys.exit(77)

import tiercache
import tiercache.torch
from checks import Checks  # tests/checks.py

check = Checks("python_torch.py")


def sha(data):
    return hashlib.sha256(data).hexdigest()


def make_origin(root, files=60, classes=4):
    rng = random.Random(5)
    digests = {}
    for i in range(files):
        rel = f"class {i % classes} ü/sample {i:03}.jpg"
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        data = rng.randbytes(rng.randint(0, 20000))
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
        digests[rel] = sha(data)
    with open(os.path.join(root, "README"), "wb") as f:  # a top-level file: no class, not a sample
        f.write(b"not a sample")
    return digests


def cache_empty(origin, rel):
    return os.path.getsize(os.path.join(origin, rel)) == 0


def hashed(data):
    """A decode for the test: the sample's digest and the pid of the worker that read it."""
    return sha(data), os.getpid()


def collate(batch):
    return batch


class Probe(tiercache.torch.Dataset):
    """Each sample also says whether the worker's cache is attached (to the owner) or its own."""

    def __getitem__(self, index):
        (digest, pid), target = super().__getitem__(index)
        return (digest, pid, self.cache.attached), target


class Killer(Probe):
    """A worker that reads sample 7 kills itself with SIGKILL, right after attaching and reading it."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if index == 7 and os.getpid() != PARENT:
            os.kill(os.getpid(), signal.SIGKILL)
        return item


PARENT = os.getpid()


def epoch(loader):
    """[(digest, target, pid, attached)] in the order the loader yielded them."""
    return [(digest, target, pid, attached) for batch in loader for (digest, pid, attached), target in batch]


def check_epochs(ds, loader, digests, what, epochs=2, sampler=None, attached=False):
    for e in range(epochs):
        if sampler is not None:
            sampler.set_epoch(e)
        seen = epoch(loader)
        check(len(seen) == len(ds), f"{what}, epoch {e}: {len(seen)} samples of {len(ds)}")
        expected = sorted((digests[p], t) for p, t in ds.samples)
        check(sorted((d, t) for d, t, _, _ in seen) == expected, f"{what}, epoch {e}: every sample once, with the origin's bytes and its class")
        check({a for _, _, _, a in seen} == {attached}, f"{what}, epoch {e}: every worker's cache is {'attached' if attached else 'its own'}")
        pids = {pid for _, _, pid, _ in seen}
        workers = loader.num_workers
        check(len(pids) == max(workers, 1) and (workers == 0 or os.getpid() not in pids),
              f"{what}, epoch {e}: read by {max(workers, 1)} process(es) ({len(pids)} seen)")
        if sampler is not None:
            check([digests[p] for p in sampler.last_plan] == [d for d, _, _, _ in seen], f"{what}, epoch {e}: the loader follows the plan")


def main():
    work = tempfile.mkdtemp(prefix=f"tiercache-test-{os.environ.get('TIERCACHE_TEST_TAG', 'manual')}-torch-py.")
    try:
        origin = os.path.join(work, "origin")
        digests = make_origin(origin)

        # A shared owner in this process; forked workers attach to it.
        name = f"tc-torch-{os.getpid()}"
        with tiercache.open(origin, dram="64MiB", share=name) as owner:
            ds = Probe(owner, decode=hashed)
            check(len(ds) == len(digests) and "README" not in [p for p, _ in ds.samples], f"{len(ds)} samples, top-level files left out")
            check(ds.classes == [f"class {i} ü" for i in range(4)] and ds.class_to_idx["class 2 ü"] == 2, f"classes: {ds.classes}")
            check(all(t == int(p.split(" ")[1]) for p, t in ds.samples) and ds.targets == [t for _, t in ds.samples],
                  "every sample's class index is its folder's")
            try:
                from torchvision import datasets
            except ImportError:
                print("python_torch.py: torchvision is missing: ImageFolder's order not compared", file=sys.stderr)
            else:
                ref = datasets.ImageFolder(origin, loader=lambda p: p, is_valid_file=lambda p: True)
                ours = [(os.path.join(origin, p), t) for p, t in ds.samples]
                check(ref.classes == ds.classes and ref.samples == ours, "samples, classes and order are torchvision ImageFolder's")
            check(ds[0][1] == ds.samples[0][1] and ds[0][0][0] == digests[ds.samples[0][0]] and ds.cache is owner,
                  "ds[0] in this process: read through the owner's handle")
            loader = DataLoader(ds, batch_size=7, shuffle=True, num_workers=2, multiprocessing_context="fork", collate_fn=collate)
            check_epochs(ds, loader, digests, "shared owner, 2 forked workers", attached=True)
            check(owner.stats()["origin"]["reads"] == len(digests) - sum(1 for p in digests if cache_empty(origin, p)),
                  f"the workers read one cache: each file from the origin once ({owner.stats()['origin']})")

            sampler = tiercache.torch.TiercacheSampler(ds, seed=3)
            loader = DataLoader(ds, batch_size=5, sampler=sampler, num_workers=2, multiprocessing_context="fork", collate_fn=collate)
            check_epochs(ds, loader, digests, "TiercacheSampler over the Dataset", sampler=sampler, attached=True)
            check(sampler.mount_root is None and len(sampler.last_plan) == len(ds), "the sampler's plan went to the cache")

            # A worker killed with SIGKILL mid-read, attached to the owner: the DataLoader says so, and the
            # owner and the other readers go on as before.
            killer = Killer(owner, decode=hashed)
            loader = DataLoader(killer, batch_size=5, shuffle=True, num_workers=2, multiprocessing_context="fork", collate_fn=collate)
            try:
                epoch(loader)
                died = None
            except RuntimeError as e:
                died = e
            check(died is not None and ("killed by signal" in str(died) or "exited unexpectedly" in str(died)), f"a worker killed with SIGKILL: the DataLoader says so ({died})")
            loader = DataLoader(ds, batch_size=7, shuffle=True, num_workers=2, multiprocessing_context="fork", collate_fn=collate)
            check_epochs(ds, loader, digests, "shared owner, after a worker was killed", epochs=1, attached=True)
            check(owner.read(ds.samples[3][0]) is not None and sha(owner.read(ds.samples[3][0])) == digests[ds.samples[3][0]],
                  "the owner reads as before")

            # collate: a batch of raw samples as one tensor from each worker, as the EpochLoader's batches are.
            raw = tiercache.torch.Dataset(owner)
            loader = DataLoader(raw, batch_size=8, shuffle=True, num_workers=2, multiprocessing_context="fork",
                                collate_fn=tiercache.torch.collate)
            seen = []
            for batch in loader:
                check(isinstance(batch, tiercache.torch.Batch) and batch.data.dtype == torch.uint8 and len(batch) == len(batch.targets),
                      "collate: a Batch of one uint8 tensor, with targets")
                seen += [(sha(bytes(batch[i].numpy())), int(batch.targets[i])) for i in range(len(batch))]
            check(sorted(seen) == sorted((digests[p], t) for p, t in raw.samples), "collate: every sample once, the origin's bytes, its class")

            sub = tiercache.torch.Dataset(owner, paths=[p for p in digests if p.startswith("class 1")])
            check(sub.classes == ["class 1 ü"] and len(sub) == 15 and set(sub.targets) == {0}, "paths=: only those, classes of them")

        # A directory: each forked worker opens its own private cache of it.
        ds = Probe(origin, decode=hashed, dram="32MiB")
        check(not ds.cache.attached and len(ds) == len(digests), "Dataset(directory) opens a private cache")
        loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2, multiprocessing_context="fork", collate_fn=collate)
        check_epochs(ds, loader, digests, "directory, 2 forked workers (private caches)")
        loader = DataLoader(ds, batch_size=8, num_workers=0, collate_fn=collate)
        check_epochs(ds, loader, digests, "directory, no workers", epochs=1)
        # Spawned workers get the Dataset pickled: no native handle, each opens its own.
        loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=2, multiprocessing_context="spawn", collate_fn=collate)
        check_epochs(ds, loader, digests, "directory, 2 spawned workers", epochs=1)

        try:
            tiercache.torch.Dataset(origin, paths=["README"])
            err = None
        except ValueError as e:
            err = e
        check(err is not None and "README" in str(err), f"paths= with a file outside any class folder: ValueError ({err})")
        try:
            tiercache.torch.Dataset(origin, paths=["class 0 ü/nope.jpg"])
            err = None
        except FileNotFoundError as e:
            err = e
        check(err is not None, "paths= naming a file the cache lacks: FileNotFoundError")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(check.summary())


if __name__ == "__main__":
    main()
