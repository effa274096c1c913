#!/usr/bin/python3
"""`import tiercache` (the pybind11 package, python/) against an origin with tricky names:
spaces, non-ASCII, shell and glob characters, a name that is not UTF-8, an empty file and one
of several extents. Every byte read through the package (read, read_into into a bytearray, a
memoryview and numpy arrays, at offsets and sizes up to and past the end, by path, id and
record) must be the origin's; the errors must be Python's (FileNotFoundError, IndexError,
ValueError with the C++ message, OSError with an errno, tiercache.OwnerGone); plans (a seed,
paths, ids, records) are taken; stats() is the mount's shape; a forked child cannot use its
parent's handle but opens its own; a shared owner serves attach(); every call has a docstring;
another Python thread runs while a read copies (the GIL is let go).

  python_cache.py VERSION_HPP     PYTHONPATH holds the built package (BUILD/python).
                                  Exits 0 when all is well, 1 with what was wrong.
"""
import errno
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time

import tiercache
from checks import Checks  # tests/checks.py

check = Checks("python_cache.py")


def raises(kind, call):
    """The exception `call` raises, if of `kind` (None when it raises nothing or another kind)."""
    try:
        call()
    except kind as e:
        return e
    except Exception as e:  # noqa: BLE001: reported as the wrong kind
        print(f"python_cache.py: expected {kind.__name__}, got {type(e).__name__}: {e}", file=sys.stderr)
    return None


# Relative paths (bytes, as on disk) and their sizes: in class folders, as ImageFolder has them.
TREE = {
    b"plain/a.jpg": 1000,
    b"with space/two words.jpg": 4096,
    "ünïcødé/名前 ✓.png".encode(): 333,
    b"odd/#%&'\"$;:!?*[]{}()=+,@^~`|\\<>.bin": 77,
    b"odd/-leading dash": 12,
    b"odd/.hidden": 5,
    b"bytes/not-utf8-\xff\xfe.raw": 64,
    b"plain/empty": 0,
    b"plain/one": 1,
    b"big/three-extents.bin": 2 * 1024 * 1024 + 4321,  # 1 MiB extents: three of them
    b"top-level-file": 10,
}


def make_origin(root):
    rng = random.Random(18)
    data = {}
    for rel, size in TREE.items():
        path = os.path.join(os.fsencode(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data[os.fsdecode(rel)] = rng.randbytes(size)
        with open(path, "wb") as f:
            f.write(data[os.fsdecode(rel)])
    return data


def library_version(version_hpp):
    with open(version_hpp) as f:
        return re.search(r'#define TIERCACHE_VERSION "([^"]+)"', f.read()).group(1)


def test_reads(cache, data):
    names = cache.paths()
    check(sorted(names) == sorted(data), f"paths() are the origin's files: {sorted(names)}")
    check(len(cache) == len(data), f"len(cache) == {len(data)}")
    for name, want in data.items():
        check(name in cache, f"{name!r} in cache")
        check(cache.size(name) == len(want), f"size({name!r}) == {len(want)}")
        for attempt in ("cold", "warm"):
            check(cache.read(name) == want, f"read({name!r}) equals the origin's bytes ({attempt})")
        i = cache.id_of(name)
        check(cache.path(i) == name and names[i] == name, f"id_of/path round trip for {name!r}")
        check(cache.read(i) == want, f"read(id {i}) equals read({name!r})")
        check(cache.read(os.fsencode(name)) == want, f"read(bytes path {name!r})")

    big = "big/three-extents.bin"
    want = data[big]
    n = len(want)
    for offset, size in [(0, 10), (5, None), (1024 * 1024 - 3, 7), (1024 * 1024, 1024 * 1024 + 1), (n - 1, 5), (n, None), (n, 4),
                         (n + 100, None), (n + 100, 10), (12345, 0), (0, n + 1000)]:
        got = cache.read(big, offset, size)
        check(got == want[offset:None if size is None else offset + size], f"read({big!r}, {offset}, {size}): {len(got)} bytes")
        got = cache.read(big, offset=offset, size=size)
        check(got == want[offset:None if size is None else offset + size], f"read(..., offset={offset}, size={size}) by keyword")

    # read_into: bytearray, memoryview slices, numpy arrays of several dtypes.
    buf = bytearray(n)
    check(cache.read_into(big, buf) == n and bytes(buf) == want, "read_into(bytearray) of the whole file")
    buf = bytearray(n + 50)
    check(cache.read_into(big, buf) == n and bytes(buf[:n]) == want, "read_into(a larger bytearray) returns the file's size")
    buf = bytearray(100)
    check(cache.read_into(big, buf, 1024 * 1024 - 50) == 100 and bytes(buf) == want[1024 * 1024 - 50:1024 * 1024 + 50],
          "read_into(bytearray, offset) across an extent boundary")
    check(cache.read_into(big, bytearray(10), n) == 0 and cache.read_into(big, bytearray(10), n + 5) == 0, "read_into past the end: 0")
    check(cache.read_into(big, bytearray(0)) == 0, "read_into an empty buffer: 0")
    buf = bytearray(30)
    check(cache.read_into(big, memoryview(buf)[10:20], 7) == 10 and bytes(buf[10:20]) == want[7:17] and buf[:10] == bytes(10),
          "read_into(memoryview slice) writes only the slice")
    check(cache.read_into("plain/empty", bytearray(8)) == 0, "read_into of an empty file: 0")
    check(raises(BufferError, lambda: cache.read_into(big, b"immutable")) is not None, "read_into(bytes) raises BufferError")
    try:
        import numpy as np
    except ImportError:
        print("python_cache.py: numpy is missing (python3-numpy): numpy buffers not checked", file=sys.stderr)
    else:
        arr = np.zeros(n, dtype=np.uint8)
        check(cache.read_into(big, arr) == n and arr.tobytes() == want, "read_into(numpy uint8 array)")
        arr = np.zeros(1000, dtype=np.float32)
        check(cache.read_into(big, arr, 8) == 4000 and arr.tobytes() == want[8:4008], "read_into(numpy float32 array): 4000 bytes")
        arr = np.zeros((20, 50), dtype=np.uint8)
        check(cache.read_into(big, arr) == 1000 and arr.tobytes() == want[:1000], "read_into(2-D numpy array)")
        check(raises(BufferError, lambda: cache.read_into(big, np.zeros((20, 50), dtype=np.uint8)[:, ::2])) is not None,
              "read_into(a non-contiguous numpy view) raises BufferError")
        ro = np.zeros(10, dtype=np.uint8)
        ro.flags.writeable = False
        check(raises(BufferError, lambda: cache.read_into(big, ro)) is not None, "read_into(a read-only numpy array) raises")

    # Records: (path or id, offset, length).
    for rec in [(big, 0, 10), (big, 1024 * 1024 - 5, 10), (cache.id_of(big), 100, 0), (big, n - 3, 3), (big, n, 0)]:
        _, off, length = rec
        check(cache.read(rec) == want[off:off + length], f"read(record {rec})")
        buf = bytearray(length + 4)
        check(cache.read_into(rec, buf) == length and bytes(buf[:length]) == want[off:off + length], f"read_into(record {rec})")
    check(cache.read((big, 10, 100), size=5) == want[10:15], "read(record, size=5): its first 5 bytes")
    e = raises(ValueError, lambda: cache.read((big, n - 3, 4)))
    check(e is not None and "past the end" in str(e), f"a record past the end of its file: ValueError naming it ({e})")
    check(raises(ValueError, lambda: cache.read((big, 5, 1), 3)) is not None, "a record with an offset argument: ValueError")
    check(raises(ValueError, lambda: cache.read((big, 5))) is not None, "a record of two fields: ValueError")


def test_threads(cache, data):
    """4 Python threads reading at once (each read lets the GIL go): every byte still the origin's."""
    wrong = []

    def reader(seed):
        rng = random.Random(seed)
        names = list(data)
        for _ in range(300):
            name = rng.choice(names)
            offset = rng.randrange(len(data[name]) + 2)
            if cache.read(name, offset, 70000) != data[name][offset:offset + 70000]:
                wrong.append((name, offset))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not wrong, f"4 threads x 300 reads at random offsets: every byte the origin's (wrong: {wrong[:3]})")


def test_gil_released(work):
    """Another Python thread runs while one read copies 64 MiB (cold from the origin, then warm
    from dram): the read lets the GIL go. The switch interval is made long, so the other thread
    gets the GIL only when a thread holding it lets it go of itself."""
    origin = os.path.join(work, "gil-origin")
    os.mkdir(origin)
    size = 64 << 20
    with open(os.path.join(origin, "big.bin"), "wb") as f:
        f.write(random.Random(3).randbytes(size))
    counted = [0]
    stop = threading.Event()

    def counter():
        while not stop.is_set():
            counted[0] += 1
            time.sleep(0)  # lets the GIL go, and asks for it again

    interval = sys.getswitchinterval()
    buf = bytearray(size)
    runs = []
    with tiercache.open(origin, dram="128MiB") as cache:
        thread = threading.Thread(target=counter)
        thread.start()
        try:
            time.sleep(0.05)  # the counter is running
            sys.setswitchinterval(30.0)
            for _ in ("cold", "warm"):
                before = counted[0]
                n = cache.read_into("big.bin", buf)
                runs.append((n, counted[0] - before))
        finally:
            sys.setswitchinterval(interval)
            stop.set()
            thread.join()
    check(all(n == size for n, _ in runs), f"read_into 64 MiB returns its size ({[n for n, _ in runs]})")
    check(all(ran > 0 for _, ran in runs), f"another thread ran during each read (cold, warm: {[r for _, r in runs]} steps)")


def test_errors(cache, origin, data):
    e = raises(FileNotFoundError, lambda: cache.read("plain/no-such.jpg"))
    check(e is not None and e.errno == errno.ENOENT and "plain/no-such.jpg" in str(e),
          f"an unknown path: FileNotFoundError(ENOENT) naming it ({e!r})")
    check(raises(FileNotFoundError, lambda: cache.read_into("nope", bytearray(4))) is not None, "read_into an unknown path")
    check(raises(FileNotFoundError, lambda: cache.size("nope")) is not None, "size of an unknown path")
    check(raises(FileNotFoundError, lambda: cache.id_of("nope")) is not None, "id_of an unknown path")
    check(raises(IndexError, lambda: cache.read(len(cache))) is not None, "an id past the catalog: IndexError")
    check(raises(IndexError, lambda: cache.read(-1)) is not None, "a negative id: IndexError")
    check(raises(IndexError, lambda: cache.read(1 << 80)) is not None, "a huge id: IndexError")
    check("nope" not in cache and len(cache) not in cache and 0 in cache, "__contains__ of paths and ids")

    e = raises(ValueError, lambda: tiercache.open(origin, dram="lots"))
    check(e is not None and "dram" in str(e) and "lots" in str(e), f"a bad dram size: ValueError with the message ({e})")
    e = raises(ValueError, lambda: tiercache.open(origin, dram="1GiB", nvme="no-colon"))
    check(e is not None and "no-colon" in str(e), f"nvme without DIR:SIZE: ValueError ({e})")
    e = raises(ValueError, lambda: tiercache.open(origin, nvme=("/no/such/dir", "1GiB")))
    check(e is not None and "/no/such/dir" in str(e), f"an nvme directory that does not exist: ValueError ({e})")
    e = raises(ValueError, lambda: tiercache.open(os.path.join(origin, "missing")))
    check(e is not None and "no such directory" in str(e), f"a missing origin: ValueError ({e})")
    e = raises(ValueError, lambda: tiercache.open(origin, policy="fifo"))
    check(e is not None and "fifo" in str(e), f"a bad policy: ValueError ({e})")
    check(raises(ValueError, lambda: tiercache.set_log_level("loud")) is not None, "a bad log level: ValueError")

    # An origin failure: a file gone since the scan. OSError with the errno, naming the file.
    victim = "with space/two words.jpg"
    with tiercache.open(origin, dram="16MiB") as fresh:
        os.rename(os.path.join(origin, victim), os.path.join(origin, victim + ".moved"))
        try:
            e = raises(OSError, lambda: fresh.read(victim))
            check(e is not None and e.errno is not None and e.errno != 0 and "two words.jpg" in str(e),
                  f"an origin file gone since the scan: OSError with an errno, naming it ({e!r})")
        finally:
            os.rename(os.path.join(origin, victim + ".moved"), os.path.join(origin, victim))

    e = raises(tiercache.OwnerGone, lambda: tiercache.attach(f"tc-py-none-{os.getpid()}"))
    check(e is not None and isinstance(e, RuntimeError), f"attach to a name nobody serves: tiercache.OwnerGone ({e})")


def test_plans(cache, data):
    n = len(cache)
    order = cache.set_plan(7)
    check(sorted(order) == list(range(n)), f"set_plan(seed) returns a permutation of the {n} ids")
    check(cache.set_plan(7, epoch=0) == order and cache.set_plan(7, epoch=1) != order, "the seeded order depends on (seed, epoch) only")
    halves = [cache.set_plan(7, epoch=2, rank=r, world=2) for r in (0, 1)]
    check(len(halves[0]) == len(halves[1]) and sorted(set(halves[0] + halves[1])) == list(range(n)),
          "two ranks' shards are as long and cover every sample")
    check(raises(ValueError, lambda: cache.set_plan(7, rank=2, world=2)) is not None, "a rank outside the world: ValueError")
    names = list(data)
    check(cache.set_plan(names) is None, "set_plan(paths)")
    check(cache.set_plan(list(range(n)), next=list(reversed(range(n)))) is None, "set_plan(ids, next=ids)")
    check(cache.set_plan([("big/three-extents.bin", 0, 100), ("big/three-extents.bin", 2 * 1024 * 1024, 4000), names[0]]) is None,
          "set_plan(records and paths)")
    check(raises(FileNotFoundError, lambda: cache.set_plan(["plain/a.jpg", "nope"])) is not None, "set_plan with an unknown path")
    check(raises(ValueError, lambda: cache.set_plan([("plain/one", 0, 2)])) is not None, "set_plan with a record past its end")
    check(raises(TypeError, lambda: cache.set_plan("plain/a.jpg")) is not None, "set_plan(one path string): TypeError")
    for name in names:  # reads under the plan still give the origin's bytes
        check(cache.read(name) == data[name], f"read({name!r}) under a plan")
    cache.clear_plan()
    check(cache.prefetch("plain/a.jpg") in ("resident", "fetched", "raced", "rejected"), "prefetch() names what it did")

    s = cache.stats()
    dram = s.get("tiers", {}).get("dram", {})
    check(all(k in dram for k in ("capacity_bytes", "used_bytes", "hits", "misses")), f"stats() has the dram tier's counters: {dram}")
    check(dram.get("hits", 0) > 0 and dram.get("used_bytes", 0) > 0, "stats(): hits and bytes held after warm reads")
    check(s.get("origin", {}).get("bytes_read", 0) >= sum(len(v) for v in data.values()), f"stats(): origin bytes_read ({s.get('origin')})")


def in_child(work):
    """Runs work() -> bool in a forked child; whether it returned True (an exception: False, printed)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            ok = bool(work())
        except Exception as e:  # noqa: BLE001: reported, and the check fails
            print(f"python_cache.py: in a forked child: {type(e).__name__}: {e}", file=sys.stderr)
            ok = False
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    return got == b"1"


def test_fork(cache, data):
    """A forked child: its copy of the parent's handle refuses to work; from_spec opens one of its own; closing the copy
    ends nothing of the parent's."""
    name = "plain/a.jpg"

    def child():
        e = raises(RuntimeError, lambda: cache.read(name))
        with tiercache.from_spec(cache.spec) as mine:
            ok = e is not None and "fork" in str(e) and mine.read(name) == data[name] and not mine.attached
        cache.close()  # the parent's copy, closed here: leaves the parent's cache alone
        return ok and cache.closed

    check(in_child(child), "a forked child: the parent's handle raises RuntimeError, from_spec(spec) opens its own and reads, "
                           "close() of the parent's copy")
    check(cache.read(name) == data[name], "the parent's cache still reads after the child")


def test_shared(origin, data):
    name = f"tc-py-{os.getpid()}"

    def client_reads():  # another process attaches, reads everything, checks the bytes
        with tiercache.attach(name) as client:
            ok = client.attached and sorted(client.paths()) == sorted(data)
            ok = ok and all(client.read(p) == want for p, want in data.items())
            buf = bytearray(len(data["plain/a.jpg"]))
            ok = ok and client.read_into("plain/a.jpg", buf) == len(buf) and bytes(buf) == data["plain/a.jpg"]
            ok = ok and client.read(("big/three-extents.bin", 5, 10)) == data["big/three-extents.bin"][5:15]
            client.set_plan(list(data))
            return ok and "tiers" in client.stats()

    with tiercache.open(origin, dram="32MiB", share=name) as owner:
        check(not owner.attached and owner.spec["args"]["share"] == name, "open(share=NAME): an owner")
        check(in_child(client_reads), "another process attach()es to open(share=NAME) and reads the origin's bytes, records, stats, plans")
    check(raises(tiercache.OwnerGone, lambda: tiercache.attach(name)) is not None, "once the owner closed: OwnerGone")


def test_api(cache):
    check(cache.closed is False and "tiercache.Cache" in repr(cache), f"repr: {cache!r}")
    public = [n for n in dir(tiercache.Cache) if not n.startswith("_")] + ["__len__", "__contains__"]
    for n in public:
        doc = getattr(tiercache.Cache, n).__doc__ or ""
        check(len(doc.strip()) > 20, f"tiercache.Cache.{n} has a docstring")
    for f in (tiercache.open, tiercache.attach, tiercache.from_spec, tiercache.set_log_level):
        check(len((f.__doc__ or "").strip()) > 20, f"tiercache.{f.__name__} has a docstring")
    check("read_into" in (tiercache.Cache.__doc__ or "") or len(tiercache.Cache.__doc__ or "") > 200, "tiercache.Cache has a docstring")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    version = library_version(sys.argv[1])
    check(tiercache.__version__ == version, f"tiercache.__version__ {tiercache.__version__} is version.hpp's {version}")
    work = tempfile.mkdtemp(prefix=f"tiercache-test-{os.environ.get('TIERCACHE_TEST_TAG', 'manual')}-python.")
    try:
        origin = os.path.join(work, "origin")
        data = make_origin(origin)
        cache = tiercache.open(origin, dram="64MiB")
        test_api(cache)
        test_reads(cache, data)
        test_threads(cache, data)
        test_gil_released(work)
        test_errors(cache, origin, data)
        test_plans(cache, data)
        test_fork(cache, data)
        cache.close()
        check(raises(ValueError, lambda: cache.read("plain/a.jpg")) is not None and cache.closed, "a closed cache: ValueError")
        cache.close()  # twice: nothing

        nvme = os.path.join(work, "nvme")
        os.mkdir(nvme)
        with tiercache.open(origin, dram="4MiB", nvme=(nvme, "64MiB")) as tiered:
            check(all(tiered.read(p) == want for p, want in data.items()), "dram + nvme (a tuple): every byte the origin's")
            check("nvme" in tiered.stats()["tiers"], "stats() lists the nvme tier")
        with tiercache.open(origin, dram=8 << 20, nvme=f"{nvme}:64MiB") as again:
            check(all(again.read(p) == want for p, want in data.items()), "dram as bytes, nvme as DIR:SIZE: every byte the origin's")
        test_shared(origin, data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(check.summary())


if __name__ == "__main__":
    main()
