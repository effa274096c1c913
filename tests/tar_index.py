#!/usr/bin/python3
"""`tiercache index` against tar shards written by Python's tarfile (what users have), in GNU,
PAX and USTAR formats, with the members that break careless tar code: names over 100 bytes,
non-ASCII names, an empty member, members of exactly 512 bytes and of 1 MiB + 1, a pax header
longer than a block, directories, symlinks and hard links. Every regular member must be in the
index with offset == TarInfo.offset_data and length == size, and those bytes of the shard must
be the member's. Then the shards it must refuse, each naming the shard: not a tar, truncated
(in a member's data, in a header), gzip'd, a sparse member (GNU tar, where installed), a member
name that is not UTF-8.

  tar_index.py TIERCACHE      TIERCACHE: the `tiercache` binary. Exits 0 when all is well, 1
                              with what was wrong.
"""
import gzip
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from checks import Checks  # tests/checks.py

check = Checks("tar_index.py")


def content(rng, n):
    return rng.randbytes(n)


def write_shard(path, fmt, rng):
    """A shard of `fmt` with the tricky members; returns {member name: bytes} of its regular files."""
    if fmt == tarfile.USTAR_FORMAT:
        long_name = "d" * 90 + "/" + "f" * 95 + ".jpg"  # over 100 bytes: ustar's prefix field holds the folder
    else:
        long_name = "long/" + "n" * 150 + ".jpg"  # a GNU ././@LongLink or a pax path record
    regular = {
        long_name: content(rng, 700),
        "ünïcødé/名前.txt": content(rng, 33),
        "empty.cls": b"",
        "block.bin": content(rng, 512),
        "big.bin": content(rng, 1024 * 1024 + 1),
        "after.txt": content(rng, 5),
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tarfile.open(path, "w", format=fmt) as tar:
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in regular.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if fmt == tarfile.PAX_FORMAT and name == "block.bin":
                info.pax_headers = {"comment": "c" * 1500}  # an extended header of several blocks
            tar.addfile(info, io.BytesIO(data))
            if name == "block.bin":
                link = tarfile.TarInfo("link-to-block")
                link.type, link.linkname = tarfile.SYMTYPE, "block.bin"
                tar.addfile(link)
                hard = tarfile.TarInfo("hard-to-block")
                hard.type, hard.linkname = tarfile.LNKTYPE, "block.bin"
                tar.addfile(hard)
        if fmt != tarfile.USTAR_FORMAT:  # a link target over 100 bytes (a long-link record)
            far = tarfile.TarInfo("far-link")
            far.type, far.linkname = tarfile.SYMTYPE, long_name
            tar.addfile(far)
    return regular


def run(tiercache, *args):
    return subprocess.run([tiercache, "index", *args], capture_output=True, timeout=120)


def read_index(text, where):
    lines = text.decode("utf-8").splitlines()
    check(json.loads(lines[0]) == {"format": "tiercache-record-index", "version": 1}, f"{where}: header {lines[0]!r}")
    return [json.loads(line) for line in lines[1:]]


def good_dataset(root, tiercache):
    rng = random.Random(7)
    shards = {  # relative path -> (format, {member: bytes})
        "shards/gnu.tar": tarfile.GNU_FORMAT,
        "shards/pax.tar": tarfile.PAX_FORMAT,
        "ustar.tar": tarfile.USTAR_FORMAT,
        "train é shards/000001.tar": tarfile.PAX_FORMAT,  # a path the JSON must escape right
    }
    expected = {path: write_shard(os.path.join(root, path), fmt, rng) for path, fmt in shards.items()}
    with open(os.path.join(root, "README.txt"), "w") as f:  # not a .tar: not indexed
        f.write("not a shard\n")
    with open(os.path.join(root, "notes.tar.txt"), "w") as f:
        f.write("not a shard either\n")

    out = run(tiercache, root)
    check(out.returncode == 0, f"index of the good dataset: exit {out.returncode}: {out.stderr.decode(errors='replace')}")
    if out.returncode != 0:
        return
    entries = read_index(out.stdout, "stdout")
    check({e["path"] for e in entries} == set(shards), f"shards indexed: {sorted({e['path'] for e in entries})}")

    records = 0
    total = 0
    for path in shards:
        file = os.path.join(root, path)
        mine = [(e["member"], e["offset"], e["length"]) for e in entries if e["path"] == path]
        with tarfile.open(file) as tar:
            theirs = [(m.name, m.offset_data, m.size) for m in tar.getmembers() if m.isreg()]
            for m in tar.getmembers():
                if m.isreg():
                    check(tar.extractfile(m).read() == expected[path][m.name], f"{path}: tarfile reads {m.name!r} back")
        check(mine == theirs, f"{path}: index {mine} != tarfile's (name, offset_data, size) {theirs}")
        check(sorted(n for n, _, _ in mine) == sorted(expected[path]), f"{path}: members {[n for n, _, _ in mine]}")
        with open(file, "rb") as f:
            for name, offset, length in mine:
                f.seek(offset)
                check(f.read(length) == expected[path].get(name), f"{path}: bytes [{offset}, +{length}) are not {name!r}")
                records += 1
                total += length
    # Skipped, a shard: "folder", "link-to-block", "hard-to-block", and "far-link" but in ustar.
    summary = out.stderr.decode()
    symlinks = sum(1 if fmt == tarfile.USTAR_FORMAT else 2 for fmt in shards.values())
    for want in [f"{len(shards)} shards, {records} records, {total:,} bytes",
                 f"skipped {len(shards)} directories, {symlinks} symlinks, {len(shards)} hard links, 0 other members"]:
        check(want in summary, f"summary {summary!r} lacks {want!r}")

    # -o FILE: the same bytes, and no temporary file left beside it.
    index_file = os.path.join(os.path.dirname(root), "index.jsonl")
    out_o = run(tiercache, root, "-o", index_file)
    check(out_o.returncode == 0, f"-o: exit {out_o.returncode}: {out_o.stderr!r}")
    with open(index_file, "rb") as f:
        check(f.read() == out.stdout, "-o FILE differs from stdout")
    left = sorted(os.listdir(os.path.dirname(index_file)))
    check(left == ["ds", "index.jsonl"], f"beside the index: {left} (a temporary file left?)")


def refused(tiercache, root, name, data, expect):
    """A dataset of one good shard and `name` holding `data`: the index fails naming `name` and saying `expect`."""
    folder = os.path.join(root, re.sub(r"\W", "_", name))
    os.makedirs(folder)
    write_shard(os.path.join(folder, "good.tar"), tarfile.PAX_FORMAT, random.Random(1))
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)
    output = os.path.join(root, re.sub(r"\W", "_", name) + ".jsonl")
    out = run(tiercache, folder, "-o", output)
    err = out.stderr.decode(errors="replace")
    check(out.returncode == 1, f"{name}: exit {out.returncode}, not 1: {err}")
    check(f"'{name}'" in err and expect in err, f"{name}: the error {err!r} does not name it and say {expect!r}")
    check(not os.path.exists(output), f"{name}: -o FILE was written by a failed index")


def bad_shards(root, tiercache):
    good = io.BytesIO()
    with tarfile.open(fileobj=good, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, size in [("a.bin", 3000), ("big.bin", 1024 * 1024 + 1), ("z.bin", 10)]:
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    good = good.getvalue()
    with tarfile.open(fileobj=io.BytesIO(good)) as tar:
        big = tar.getmember("big.bin")

    refused(tiercache, root, "text.tar", b"this is not a tar file\n" * 100, "cannot read it as a tar archive")
    refused(tiercache, root, "cut-in-data.tar", good[: big.offset_data + 4096], "truncated")
    refused(tiercache, root, "cut-in-header.tar", good[: big.offset + 100], "truncated")
    refused(tiercache, root, "gzipped.tar", gzip.compress(good), "compressed (gzip)")
    latin1 = io.BytesIO()
    with tarfile.open(fileobj=latin1, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        info = tarfile.TarInfo("caf\xe9.jpg")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    refused(tiercache, root, "latin1.tar", latin1.getvalue(), "not UTF-8")

    gnu_tar = shutil.which("tar")  # Python's tarfile cannot write sparse members; GNU tar can
    if gnu_tar and b"GNU tar" in subprocess.run([gnu_tar, "--version"], capture_output=True).stdout:
        sparse_dir = os.path.join(root, "sparse-src")
        os.makedirs(sparse_dir)
        with open(os.path.join(sparse_dir, "holes.bin"), "wb") as f:
            f.truncate(4 * 1024 * 1024)
            f.seek(3 * 1024 * 1024)
            f.write(b"data")
        for fmt in ["gnu", "posix"]:
            shard = os.path.join(root, f"sparse-{fmt}.tar")
            subprocess.run([gnu_tar, "--sparse", f"--format={fmt}", "-cf", shard, "-C", sparse_dir, "holes.bin"], check=True)
            with open(shard, "rb") as f:
                refused(tiercache, root, f"sparse-{fmt}.tar", f.read(), "is sparse")
    else:
        print("tar_index.py: no GNU tar: the sparse member is not checked", file=sys.stderr)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    tiercache = sys.argv[1]
    tag = os.environ.get("TIERCACHE_TEST_TAG", "manual")
    with tempfile.TemporaryDirectory(prefix=f"tiercache-test-{tag}-") as tmp:
        os.makedirs(os.path.join(tmp, "good", "ds"))
        good_dataset(os.path.join(tmp, "good", "ds"), tiercache)
        os.makedirs(os.path.join(tmp, "bad"))
        bad_shards(os.path.join(tmp, "bad"), tiercache)
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
