#!/usr/bin/python3
"""Packed datasets read by the readers users have (Debian's python3-lmdb, python3-h5py,
python3-numpy, and Python's tarfile), for the extent tests.

  readers.py make ORIGIN MIB      writes an LMDB, an HDF5 file, a .npy and a tar shard of
                                  about MIB MiB each under ORIGIN
  readers.py check ORIGIN ROOT [--no-mmap] [--passes N] [--seed S]
                                  reads each at random through ROOT (a mount of ORIGIN), N
                                  passes, and compares every value with ORIGIN's; prints one
                                  JSON line of counts; exits 1 on a mismatch, 2 when a module
                                  is missing. --no-mmap leaves out the readers that map the
                                  file (LMDB, numpy memmap).
"""
import io
import json
import os
import random
import sys
import tarfile

try:
    import h5py
    import lmdb
    import numpy as np
except ImportError as e:  # the caller says which package to install
    print(f"readers.py: {e}: install python3-lmdb python3-h5py python3-numpy (scripts/install-deps)", file=sys.stderr)
    sys.exit(2)

VALUE_BYTES = 8192
ROW_FLOATS = 1024
MEMBER_BYTES = 80 * 1024


def value_of(key: int, n: int) -> bytes:
    """Deterministic bytes for a key, n long."""
    return random.Random(key).randbytes(n)


def make(origin: str, mib: int) -> None:
    total = mib << 20
    os.makedirs(origin, exist_ok=True)
    # LMDB: a directory with data.mdb (lock.mdb left out: readers open it with lock=False).
    keys = total // VALUE_BYTES
    env = lmdb.open(os.path.join(origin, "lmdb"), map_size=total * 3, subdir=True, lock=True)
    with env.begin(write=True) as txn:
        for k in range(keys):
            txn.put(f"{k:08d}".encode(), value_of(k, VALUE_BYTES))
    env.close()
    lock = os.path.join(origin, "lmdb", "lock.mdb")
    if os.path.exists(lock):
        os.remove(lock)
    rows = total // (ROW_FLOATS * 4)
    rng = np.random.default_rng(1)
    # HDF5: one chunked float32 dataset.
    with h5py.File(os.path.join(origin, "data.h5"), "w") as f:
        f.create_dataset("x", data=rng.standard_normal((rows, ROW_FLOATS), dtype=np.float32), chunks=(64, ROW_FLOATS))
    # numpy: a .npy that readers map.
    np.save(os.path.join(origin, "feats.npy"), rng.standard_normal((rows, ROW_FLOATS), dtype=np.float32))
    # A WebDataset-style tar shard: members of MEMBER_BYTES (a .cls and a .bin per sample).
    with tarfile.open(os.path.join(origin, "shard-000000.tar"), "w") as tar:
        for k in range(total // MEMBER_BYTES):
            for ext, data in ((".cls", str(k % 1000).encode()), (".bin", value_of(10**6 + k, MEMBER_BYTES))):
                info = tarfile.TarInfo(f"{k:06d}{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def check(origin: str, root: str, mmap: bool, passes: int, seed: int) -> int:
    rng = random.Random(seed)
    counts = {}
    bad = 0

    def note(reader: str, ok: bool, what: str) -> None:
        nonlocal bad
        counts[reader] = counts.get(reader, 0) + 1
        if not ok:
            bad += 1
            if bad <= 5:
                print(f"readers.py: {reader}: {what} differs from the origin's", file=sys.stderr)

    if mmap:
        envs = [lmdb.open(os.path.join(d, "lmdb"), readonly=True, lock=False, subdir=True) for d in (origin, root)]
        keys = envs[0].stat()["entries"]
        for _ in range(passes):
            order = list(range(keys))
            rng.shuffle(order)
            with envs[0].begin() as a, envs[1].begin() as b:
                for k in order:
                    key = f"{k:08d}".encode()
                    got = b.get(key)
                    note("lmdb", got == a.get(key) and got == value_of(k, VALUE_BYTES), f"key {k}")
        for env in envs:
            env.close()
        arrays = [np.load(os.path.join(d, "feats.npy"), mmap_mode="r") for d in (origin, root)]
        for _ in range(passes):
            order = list(range(arrays[0].shape[0]))
            rng.shuffle(order)
            for r in order:
                note("numpy", np.array_equal(arrays[0][r], arrays[1][r]), f"row {r}")
        del arrays

    files = [h5py.File(os.path.join(d, "data.h5"), "r") for d in (origin, root)]
    rows = files[0]["x"].shape[0]
    for _ in range(passes):
        order = list(range(rows))
        rng.shuffle(order)
        for r in order:
            note("hdf5", np.array_equal(files[0]["x"][r], files[1]["x"][r]), f"row {r}")
    for f in files:
        f.close()

    tars = [tarfile.open(os.path.join(d, "shard-000000.tar"), "r:") for d in (origin, root)]
    members = [m for m in tars[1].getmembers() if m.isfile()]
    by_name = {m.name: m for m in tars[0].getmembers()}
    for _ in range(passes):
        rng.shuffle(members)
        for m in members:
            got = tars[1].extractfile(m).read()
            note("tar", got == tars[0].extractfile(by_name[m.name]).read(), f"member {m.name}")
    for t in tars:
        t.close()

    print(json.dumps({"reads": counts, "mismatches": bad}))
    return 1 if bad else 0


def main(argv) -> int:
    if len(argv) >= 3 and argv[1] == "make":
        make(argv[2], int(argv[3]) if len(argv) > 3 else 24)
        return 0
    if len(argv) >= 4 and argv[1] == "check":
        rest = argv[4:]
        mmap = "--no-mmap" not in rest
        passes = int(rest[rest.index("--passes") + 1]) if "--passes" in rest else 2
        seed = int(rest[rest.index("--seed") + 1]) if "--seed" in rest else 1
        return check(argv[2], argv[3], mmap, passes, seed)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
