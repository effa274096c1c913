#!/usr/bin/python3
"""tiercache.torch.EpochLoader: batches from the C++ EpochLoader's native threads as uint8 tensors
viewing its pinned ring (no copy). Over a tricky-name ImageFolder-style tree: every epoch's
batches hold the origin's bytes in TiercacheSampler's order, with ImageFolder's classes; over a
Cache, the library's seeded order (Cache.set_plan's); records; a loop that keeps its last batch
into the next epoch; views keep their buffer from being refilled, and holding too many batches
is an error, not a hang; a file gone from the origin fails its batch only.

  python_loader.py                PYTHONPATH holds the built package (BUILD/python).
                                  Exits 0 when all is well, 1 with what was wrong, 77 (skipped)
                                  when /usr/bin/python3 cannot import torch.
"""
import hashlib
import os
import random
import shutil
import sys
import tempfile

try:
    import torch
except ImportError as e:
    print(f"python_loader.py: SKIP: {e} (scripts/install-deps --torch installs python3-torch)")
    sys.exit(77)

import tiercache
import tiercache.torch
from checks import Checks  # tests/checks.py

check = Checks("python_loader.py")


def make_origin(root, files=90, classes=3):
    rng = random.Random(11)
    data = {}
    for i in range(files):
        rel = f"klass {i % classes} é/img {i:03}.jpg"
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        # Some empty, some larger than the rest: batches of unequal sizes, the ring grows once.
        size = 0 if i % 17 == 0 else rng.randint(1, 40000 if i < 60 else 120000)
        data[rel] = rng.randbytes(size)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data[rel])
    return data


def raises(kind, call):
    try:
        call()
    except kind as e:
        return e
    return None


def main():
    work = tempfile.mkdtemp(prefix=f"tiercache-test-{os.environ.get('TIERCACHE_TEST_TAG', 'manual')}-loader-py.")
    try:
        origin = os.path.join(work, "origin")
        data = make_origin(origin)
        cache = tiercache.open(origin, dram="64MiB")
        ds = tiercache.torch.Dataset(cache)
        loader = tiercache.torch.EpochLoader(ds, batch_size=7, seed=4, depth=3, threads=3)
        check(len(loader) == 13, f"len(loader): 13 batches of 7 for 90 samples ({len(loader)})")

        # The loop users write: `batch` keeps the last batch of an epoch into the next one.
        for epoch in range(4):
            loader.set_epoch(epoch)
            want = tiercache.torch.TiercacheSampler(ds, seed=4)
            want.set_epoch(epoch)
            order = want.indices()
            got, targets, sizes_ok = [], [], True
            for batch in loader:
                check(batch.data.dtype == torch.uint8 and batch.data.dim() == 1, "a batch's data is a 1-D uint8 tensor")
                got += list(batch.indices)
                targets += batch.targets.tolist()
                for i, sample in enumerate(batch):
                    path = ds.samples[batch.indices[i]][0]
                    sizes_ok = sizes_ok and bytes(sample.numpy()) == data[path] and int(batch.sizes[i]) == len(data[path])
            check(got == order, f"epoch {epoch}: the batches follow TiercacheSampler's order")
            check(sizes_ok, f"epoch {epoch}: every sample's bytes are the origin's")
            check(targets == [ds.samples[i][1] for i in order], f"epoch {epoch}: targets are ImageFolder's class indices")
            stats = loader.stats()
            check(stats["batches"] == 13 and stats["samples"] == 90 and stats["bytes"] == sum(map(len, data.values())),
                  f"epoch {epoch}: stats count every batch, sample and byte ({stats})")
        check(loader.ring.allocations <= 2, f"the ring is allocated once, and again at most once to grow ({loader.ring.allocations})")
        check(loader.memory is not None and "batch buffers" in loader.memory, f"memory: {loader.memory}")
        del batch

        # Views keep their buffer: a sample kept from batch 0 stops the ring from refilling it,
        # so the batch that needs that buffer raises instead of waiting forever.
        small = tiercache.torch.EpochLoader(ds, batch_size=10, seed=1, depth=2)
        it = iter(small)
        kept = next(it)[0]
        kept_bytes = bytes(kept.numpy())
        second = next(it)
        err = raises(RuntimeError, lambda: next(it))
        check(err is not None and "still alive" in str(err) and "depth - 1 = 1" in str(err), f"a held buffer is an error, not a hang: {err}")
        check(bytes(kept.numpy()) == kept_bytes, "the kept view's bytes are unchanged")
        del kept, second
        rest = list(b.indices for b in iter(small))  # a new pass: the old one's batches are gone
        check(len(rest) == 9, f"after letting go, a new pass hands out every batch ({len(rest)})")
        del rest

        # decode=: each batch's samples decoded on a thread pool ahead of the loop, its bytes given back.
        def digest(view):
            return hashlib.sha256(bytes(view.numpy())).hexdigest()

        decoded = tiercache.torch.EpochLoader(ds, batch_size=8, seed=2, depth=3, decode=digest, decode_threads=3)
        for epoch in range(2):
            decoded.set_epoch(epoch)
            want = tiercache.torch.TiercacheSampler(ds, seed=2)
            want.set_epoch(epoch)
            seen = [(i, d, b.data is None) for b in decoded for i, d in zip(b.indices, b)]
            check([i for i, _, _ in seen] == want.indices(), f"decode=, epoch {epoch}: the sampler's order")
            check(all(d == hashlib.sha256(data[ds.samples[i][0]]).hexdigest() and gone for i, d, gone in seen),
                  f"decode=, epoch {epoch}: each sample decoded from the origin's bytes, the raw bytes given back")
        partial = iter(decoded)  # a pass left midway, then a new one: no buffer stays held
        next(partial)
        check(sum(len(b) for b in decoded) == 90, "decode=: a pass after one left midway hands out every sample")
        del partial

        def fails_on_first(view, first=[]):
            if not first:
                first.append(1)
                raise ValueError("decode failed on purpose")
            return int(view.numel())

        failing = tiercache.torch.EpochLoader(ds, batch_size=30, shuffle=False, depth=2, decode=fails_on_first, decode_threads=1)
        it = iter(failing)
        err = raises(ValueError, lambda: next(it))
        rest = [len(b) for b in it]
        check(err is not None and rest == [30, 30], f"decode=: a decode error raises for its batch ({err}), the pass goes on ({rest})")
        decoded.close()
        failing.close()

        # Over a Cache: the library's seeded shuffle, the order Cache.set_plan(seed) returns, sharded.
        for rank in range(2):
            over_cache = tiercache.torch.EpochLoader(cache, batch_size=8, seed=9, rank=rank, world=2, device="cpu")
            over_cache.set_epoch(2)
            ids = [i for b in over_cache for i in b.indices]
            check(ids == cache.set_plan(9, epoch=2, rank=rank, world=2), f"over a Cache, rank {rank} of 2: set_plan's order")
        # Records, through the native loader.
        paths = sorted(p for p in data if len(data[p]) > 100)[:20]
        records = [(p, 10, 50) for p in paths]
        native = tiercache._tiercache.EpochLoader(cache, records, batch=6, depth=2)
        pieces = []
        for b in native:
            view = memoryview(b)
            pieces += [bytes(view[o:o + s]) for o, s in zip(b.offsets, b.sizes)]
            del view
        check(pieces == [data[p][10:60] for p in paths], "records: each batch holds the records' bytes in order")
        err = raises(ValueError, lambda: tiercache._tiercache.EpochLoader(cache, [(paths[0], 0, 10 ** 9)]))
        check(err is not None, f"a record outside its file: ValueError ({err})")
        err = raises(FileNotFoundError, lambda: tiercache._tiercache.EpochLoader(cache, ["no/such.jpg"]))
        check(err is not None, "a plan naming a path the cache lacks: FileNotFoundError")

        # A file gone from the origin: its batch raises OSError, the others come.
        fresh = tiercache.open(origin, dram="8MiB")
        victim = sorted(p for p in data if data[p])[0]
        os.remove(os.path.join(origin, victim))
        gone = tiercache.torch.EpochLoader(tiercache.torch.Dataset(fresh), batch_size=9, shuffle=False, depth=2)
        it, good, errors = iter(gone), 0, []
        while True:
            try:
                b = next(it)
            except StopIteration:
                break
            except OSError as e:
                errors.append(e)
                continue
            good += 1
            del b
        check(len(errors) == 1 and good == 9 and victim in str(errors[0]), f"one batch fails, naming the file ({errors}), 9 come ({good})")
        fresh.close()
        cache.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(check.summary())


if __name__ == "__main__":
    main()
