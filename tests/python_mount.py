#!/usr/bin/python3
"""`import tiercache` against a real mount: tiercache-fuse ORIGIN MNT --share NAME, then
tiercache.attach(NAME) from Python. Every byte read through the attached cache (read,
read_into, records) must be the origin's and the mount's; the client's plan and stats reach
the owner; once the mount is gone, a call raises tiercache.OwnerGone. The mount is unmounted
on every way out.

  python_mount.py TIERCACHE_FUSE TIERCACHE_CLI    PYTHONPATH holds the built package.
                                                  Exits 0 when all is well, 1 with what was
                                                  wrong, 77 (skipped) without /dev/fuse.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import tiercache
from checks import Checks  # tests/checks.py

check = Checks("python_mount.py")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def is_mounted(path):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path.replace(" ", "\\040") for line in f)


def unmount(mnt, daemon):
    """fusermount3 -u, again after a second, then lazily; then the daemon must exit."""
    for args in (["-u"], ["-u"], ["-uz"]):
        if not is_mounted(mnt):
            break
        subprocess.run(["fusermount3", *args, mnt], stderr=subprocess.DEVNULL, check=False)
        time.sleep(1)
    try:
        daemon.wait(timeout=10)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def checks_through(origin, mnt, name):
    with tiercache.attach(name) as cache:
        rel = sorted(cache.paths())
        on_disk = sorted(os.path.relpath(os.path.join(d, f), origin) for d, _, files in os.walk(origin) for f in files)
        check(cache.attached and rel == on_disk, f"attach({name!r}) sees the origin's {len(on_disk)} files")
        check(all(cache.read(p) == read(os.path.join(origin, p)) == read(os.path.join(mnt, p)) for p in rel),
              "every file read through the attached cache equals the origin's and the mount's")
        big = max(rel, key=cache.size)
        want = read(os.path.join(origin, big))
        buf = bytearray(len(want) + 10)
        check(cache.read_into(big, buf) == len(want) and bytes(buf[:len(want)]) == want, f"read_into({big!r})")
        check(cache.read((big, 100, 50)) == want[100:150] and cache.read(big, 7, 9) == want[7:16], "a record and a range")
        check(cache.set_plan(list(reversed(rel))) is None, "set_plan(paths) from the attached client")
        stats = cache.stats()
        check(stats["share"]["name"] == name and stats["plan"]["samples"] >= len(rel) and stats["tiers"]["dram"]["hits"] > 0,
              f"the owner's stats: its share, the client's plan, hits ({stats['share']}, {stats['plan']})")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    fuse, cli = sys.argv[1:]
    if not os.path.exists("/dev/fuse"):
        print("python_mount.py: SKIP: no /dev/fuse")
        sys.exit(77)
    work = tempfile.mkdtemp(prefix=f"tiercache-test-{os.environ.get('TIERCACHE_TEST_TAG', 'manual')}-python-mount.")
    origin, mnt, name = os.path.join(work, "origin"), os.path.join(work, "mnt"), f"tc-py-mount-{os.getpid()}"
    os.mkdir(mnt)
    subprocess.run([cli, "gen", origin, "--files", "120", "--classes", "4", "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
    daemon = subprocess.Popen([fuse, origin, mnt, "-f", "--share", name, "--dram", "64MiB", "--log", os.path.join(work, "fuse.log")],
                              stdin=subprocess.DEVNULL)
    try:
        for _ in range(300):
            if os.path.exists(os.path.join(mnt, ".tiercache", "stats")) or daemon.poll() is not None:
                break
            time.sleep(0.1)
        check(os.path.exists(os.path.join(mnt, ".tiercache", "stats")), "the mount came up")
        if not check.failures:
            # A client whose owner goes: its next call raises OwnerGone (within the owner timeout).
            with tiercache.attach(name, timeout=1.0) as orphan:
                checks_through(origin, mnt, name)
                first = orphan.paths()[0]
                unmount(mnt, daemon)
                err = None
                for _ in range(50):  # OwnerGone at once when it asks the owner, within 1 s when it reads the segment
                    try:
                        orphan.read(first)
                        orphan.stats()
                    except tiercache.OwnerGone as e:
                        err = e
                        break
                    time.sleep(0.1)
                check(err is not None, f"after the unmount, the client's call raises tiercache.OwnerGone ({err})")
    finally:
        unmount(mnt, daemon)
        if check.failures and os.path.exists(os.path.join(work, "fuse.log")):
            print("--- tiercache-fuse log:\n" + read(os.path.join(work, "fuse.log")).decode(errors="replace"), file=sys.stderr)
        if not is_mounted(mnt):
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(check.summary())


if __name__ == "__main__":
    main()
