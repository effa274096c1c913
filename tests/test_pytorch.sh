#!/usr/bin/env bash
# PyTorch over a real tiercache mount: TiercacheSampler (tiercache.torch) + ImageFolder + DataLoader.
#
#   tests/test_pytorch.sh TIERCACHE_FUSE TIERCACHE_CLI
#
# Exits 77 (ctest: skipped) only when /usr/bin/python3 cannot import torch and torchvision
# (scripts/install-deps --torch installs them), or when PYTHONPATH names no tiercache package
# (ctest sets it to the build tree's; a build without it). Otherwise it mounts a small generated dataset
# and checks, over 2 epochs:
#   - the loader yields samples in exactly the order the sampler wrote to .tiercache/plan, and
#     that order is DistributedSampler's (randperm seeded seed + epoch), new every epoch;
#   - the plan file read back is active, of kind paths, with one position per sample;
#   - every byte read through the mount (DataLoader with 2 workers) equals the origin's;
#   - the prefetch counters in .tiercache/stats moved;
#   - hostile plans ("..", absolute paths) fail the write with EINVAL (OSError in Python),
#     leave the active plan alone, and the mount still serves; the sampler reports a refused
#     plan as an OSError naming the plan file.
# The mount is unmounted on every way out (success, failure, a signal).
set -euo pipefail

fuse_bin="${1:?usage: test_pytorch.sh TIERCACHE_FUSE TIERCACHE_CLI}"
cli_bin="${2:?usage: test_pytorch.sh TIERCACHE_FUSE TIERCACHE_CLI}"
here="$(cd "$(dirname "$0")" && pwd)"
python=/usr/bin/python3  # Debian's python3-torch is installed for the system python

if ! "$python" -c 'import torch, torchvision' 2>/dev/null; then
    echo "test_pytorch: SKIP: $python cannot import torch and torchvision (scripts/install-deps --torch)"
    exit 77
fi
# TiercacheSampler comes from the package (PYTHONPATH: the build tree's, as ctest sets it).
if [ -z "${PYTHONPATH:-}" ]; then
    echo "test_pytorch: SKIP: no PYTHONPATH to the tiercache package (a build with TIERCACHE_BUILD_PYTHON=OFF)"
    exit 77
fi

# shellcheck source=scripts/lib/mount.sh
source "$here/../scripts/lib/mount.sh"

work=""
mnt=""
daemon=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [ -z "$mnt" ] || unmount_safely "$mnt" test_pytorch
    if [ -n "$daemon" ]; then  # the foreground daemon exits once unmounted; never leave it behind
        for _ in $(seq 100); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    if [ -n "$work" ] && ! { [ -n "$mnt" ] && is_mounted "$mnt"; }; then
        [ "$status" -eq 0 ] || { echo "--- tiercache-fuse log:"; cat "$work/fuse.log" 2>/dev/null || true; }
        rm -rf "$work"
    fi
    [ "$status" -eq 0 ] && echo "test_pytorch: PASS" || echo "test_pytorch: FAIL (exit status $status)" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ -e /dev/fuse ] || { echo "test_pytorch: /dev/fuse is missing: cannot mount" >&2; exit 1; }

# tiercache-test-TAG-: this build's test folders, the ones its no-mounts-left fixture checks.
work="$(mktemp -d "$(realpath "${TMPDIR:-/tmp}")/tiercache-test-${TIERCACHE_TEST_TAG:-manual}-torch.XXXXXX")"
origin="$work/origin"
mnt="$work/mnt"
mkdir "$mnt"
"$cli_bin" gen "$origin" --files 240 --classes 6 --seed 11 > /dev/null

"$fuse_bin" "$origin" "$mnt" -f --log "$work/fuse.log" --dram 64MiB --prefetch-threads 2 < /dev/null &
daemon=$!
for _ in $(seq 300); do
    [ -e "$mnt/.tiercache/stats" ] && break
    kill -0 "$daemon" 2>/dev/null || { echo "test_pytorch: tiercache-fuse exited before mounting" >&2; exit 1; }
    sleep 0.1
done
[ -e "$mnt/.tiercache/stats" ] || { echo "test_pytorch: the mount did not come up within 30 s" >&2; exit 1; }

"$python" - "$origin" "$mnt" <<'EOF'
import errno, hashlib, json, os, sys
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from tiercache.torch import TiercacheSampler

origin, mnt = sys.argv[1], sys.argv[2]
plan_file = os.path.join(mnt, ".tiercache", "plan")
SEED = 7


def sha(data):
    return hashlib.sha256(data).hexdigest()


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Hashed(datasets.ImageFolder):
    """ImageFolder reading raw bytes; yields (index, sha256 of the bytes read)."""
    def __init__(self, root):
        super().__init__(root, loader=read)

    def __getitem__(self, i):
        data, _ = super().__getitem__(i)
        return i, sha(data)


def stats():
    return json.loads(read(os.path.join(mnt, ".tiercache", "stats")))


def plan_status():
    return json.loads(read(plan_file))


def check(cond, what):
    if not cond:
        sys.exit(f"test_pytorch: FAILED: {what}")
    print(f"ok: {what}")


ds = Hashed(mnt)
n = len(ds)
rel = [os.path.relpath(p, mnt) for p, _ in ds.samples]
expected = {r: sha(read(os.path.join(origin, r))) for r in rel}
check(n == 240 and sorted(rel) == sorted(expected), f"ImageFolder over the mount sees the {n} files of the origin")
before = stats()

# 1. Order: batch_size=1, num_workers=0, two epochs.
sampler = TiercacheSampler(ds, seed=SEED)
check(sampler.mount_root == mnt, "the sampler finds the mount root")
loader = DataLoader(ds, batch_size=1, num_workers=0, sampler=sampler)
orders = []
for epoch in range(2):
    sampler.set_epoch(epoch)
    seen = [(int(idx[0]), hs[0]) for idx, hs in loader]  # batches of one: ([index], [sha])
    g = torch.Generator()
    g.manual_seed(SEED + epoch)
    reference = [rel[i] for i in torch.randperm(n, generator=g).tolist()]
    yielded = [rel[i] for i, _ in seen]
    check(sampler.last_plan == reference, f"epoch {epoch}: the plan written is DistributedSampler's order")
    check(yielded == sampler.last_plan, f"epoch {epoch}: the loader yields the {n} samples in the plan's order")
    check(all(h == expected[rel[i]] for i, h in seen), f"epoch {epoch}: every sample's bytes equal the origin's")
    p = plan_status()
    check(p["state"] == "active" and p["kind"] == "paths" and p["samples"] == n and p["last_error"] is None,
          f"epoch {epoch}: the plan read back is active, paths, {n} samples ({json.dumps(p)})")
    orders.append(yielded)
check(orders[0] != orders[1], "the two epochs have different orders")

after = stats()
pf, pf0 = after["prefetch"], before["prefetch"]
moved = {k: pf[k] - pf0.get(k, 0) for k in ("issued", "fetched", "resident", "raced")}
check(moved["issued"] > 0 and moved["fetched"] + moved["resident"] + moved["raced"] > 0,
      f"the prefetch counters moved: {moved}")

# 2. Bytes: batch_size=8, num_workers=2, two epochs; every sample once per epoch, origin bytes.
sampler2 = TiercacheSampler(ds, seed=SEED + 100)
loader2 = DataLoader(ds, batch_size=8, num_workers=2, sampler=sampler2)
for epoch in range(2):
    sampler2.set_epoch(epoch)
    got = [(int(i), h) for idx, hs in loader2 for i, h in zip(idx, hs)]
    check(sorted(i for i, _ in got) == list(range(n)), f"workers, epoch {epoch}: every sample exactly once")
    check(all(h == expected[rel[i]] for i, h in got), f"workers, epoch {epoch}: every byte equals the origin's")
    check([rel[i] for i, _ in got] == sampler2.last_plan, f"workers, epoch {epoch}: batches come in the plan's order")

# 3. Hostile plans: EINVAL, nothing applied, the mount still serves.
active = plan_status()
for bad in ["../" + rel[0], rel[0] + "\n../../etc/passwd", "/etc/passwd", rel[0].split("/")[0] + "/../" + rel[0]]:
    try:
        with open(plan_file, "w") as f:
            f.write(bad + "\n")
        err = None
    except OSError as e:
        err = e
    check(err is not None and err.errno == errno.EINVAL, f"hostile plan {bad!r} raises OSError(EINVAL): {err!r}")
    p = plan_status()
    check(p["state"] == "active" and p["samples"] == active["samples"] and p["last_error"],
          f"... and the active plan stays (last_error: {p['last_error']!r})")

bad_sampler = TiercacheSampler(ds, seed=SEED)
bad_sampler.paths = ["../outside"] + bad_sampler.paths[1:]
try:
    list(bad_sampler)
    err = None
except OSError as e:
    err = e
check(err is not None and err.errno == errno.EINVAL and err.filename == plan_file,
      f"the sampler raises OSError(EINVAL) naming the plan file on a refused plan: {err}")

for r in rel[:20]:
    assert sha(read(os.path.join(mnt, r))) == expected[r]
check(True, "the mount still serves the origin's bytes")
sampler.set_epoch(5)
check([rel[int(b[0][0])] for b in loader] == sampler.last_plan, "and a good plan is accepted and followed again")
EOF
