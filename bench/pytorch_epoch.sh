#!/usr/bin/env bash
# PyTorch epochs over a slow origin (DESIGN.md section 7): the same training loop
# (examples/pytorch/train_imagefolder.py: ImageFolder of raw bytes, DataLoader with 4 workers,
# a fixed sleep per batch for compute) over the same generated dataset, side by side:
#   native   DataLoader(shuffle=True) reading the origin directory directly
#   mount    the same DataLoader(shuffle=True) through tiercache-fuse, no plan written
#   plan     through tiercache-fuse with TiercacheSampler writing each epoch's order to the plan
# The origin is made slow and kept slow: every process of the bench (the loaders, the mount's
# daemon) runs in a blkio cgroup throttled to ORIGIN_MBPS, and the origin's files are evicted
# from the page cache before every epoch (fadvise DONTNEED), so whoever reads the origin reads
# the disk every epoch, as from a remote store. The mount keeps its own caches (its DRAM tier
# and, by default, the kernel's pages of the mounted files), as it does in use.
# Each configuration starts cold (a fresh mount) and runs EPOCHS epochs: epoch 1 cold, then
# warm. Figures are medians over RUNS runs.
# ORIGIN_MBPS=0 measures the other case, a local dataset: no throttle, no eviction, so the
# native loader reads the page cache once warm (set COMPUTE_MS=0 too for the loader's top
# speed in images/s: bench/run does, for its PyTorch workload).
#
#   bench/pytorch_epoch.sh                    # FILES=3000 (~320 MiB) generated into /var/tmp
#   RUNS=1 ORIGIN_MBPS=200 DRAM=160MiB bench/pytorch_epoch.sh [DATASET_DIR]
#
# Environment: FILES (3000), RUNS (3), EPOCHS (3), ORIGIN_MBPS (50), DRAM (1GiB: holds the
# dataset), BATCH (32), WORKERS (4), COMPUTE_MS (40, per batch), PREFETCH_THREADS (4),
# TIERCACHE_FUSE_OPTS (extra tiercache-fuse options), BUILD_DIR (build).
# Needs root (cgroups) and /usr/bin/python3 with torch and torchvision
# (scripts/install-deps --torch). Prints a Markdown table and writes it to
# bench/results/pytorch_epoch-<date>.md; with RESULT_JSON=FILE also the bench/run summary rows
# (warm images/s through the mount against the origin). The mount, the cgroup and the temporary files are
# removed on every way out, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/.."

files="${FILES:-3000}"
runs="${RUNS:-3}"
epochs="${EPOCHS:-3}"
origin_mbps="${ORIGIN_MBPS:-50}"
dram="${DRAM:-1GiB}"
batch="${BATCH:-32}"
workers="${WORKERS:-4}"
compute_ms="${COMPUTE_MS:-40}"
prefetch_threads="${PREFETCH_THREADS:-4}"
read -r -a fuse_opts <<< "${TIERCACHE_FUSE_OPTS:-}"
build="${BUILD_DIR:-build}"
dataset="${1:-}"
tc="$build/cache/tiercache"
tc_fuse="$build/fuse/tiercache-fuse"
python=/usr/bin/python3
cg=/sys/fs/cgroup/blkio/tc-bench-torch

log() { printf 'pytorch_epoch: %s\n' "$*" >&2; }
[ -d "$(dirname "$cg")" ] || { log "no cgroup v1 blkio controller at $(dirname "$cg")"; exit 1; }
[ "$(id -u)" -eq 0 ] || { log "needs root (cgroups)"; exit 1; }
"$python" -c 'import torch, torchvision' 2>/dev/null || { log "$python lacks torch/torchvision: scripts/install-deps --torch"; exit 1; }

# shellcheck source=scripts/lib/mount.sh
source scripts/lib/mount.sh
work=""
mnt=""
cleanup() {
    local status=$?
    # Ignored, not reset: a second Ctrl-C must not cut the cleanup short.
    trap - EXIT
    trap '' INT TERM
    [ -z "$mnt" ] || unmount_safely "$mnt" pytorch_epoch
    if [ -d "$cg" ]; then
        while read -r p; do echo "$p" > "$(dirname "$cg")/cgroup.procs" 2>/dev/null || true; done < "$cg/cgroup.procs"
        rmdir "$cg" 2>/dev/null || true
    fi
    if [ -n "$work" ] && ! { [ -n "$mnt" ] && is_mounted "$mnt"; }; then rm -rf "$work"; fi
    [ "$status" -eq 0 ] || log "failed (exit status $status)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The Python package (tiercache.torch's TiercacheSampler) from the build tree.
if [ ! -x "$tc" ] || [ ! -x "$tc_fuse" ] || ! compgen -G "$build/python/tiercache/_tiercache*.so" > /dev/null; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2
    cmake --build "$build" -j2 --target tiercache-tools tiercache-python >&2
fi
PYTHONPATH="$(realpath "$build")/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH

# On the real disk (not /tmp, which may be a tmpfs elsewhere): the throttle applies to it.
work="$(mktemp -d /var/tmp/tiercache-torch.XXXXXX)"
mnt="$work/mnt"
mkdir "$mnt"
if [ -n "$dataset" ]; then
    origin="$(realpath "$dataset")"
    dataset_note="$origin"
else
    origin="$work/origin"
    log "generating $files files into $origin"
    "$tc" gen "$origin" --files "$files" --classes 100 --seed 5 >&2
    dataset_note="tiercache gen --files $files --classes 100 --seed 5"
fi
dev="$(findmnt -no MAJ:MIN -T "$origin" | tr -d ' ')"
mkdir -p "$cg"
# The cgroup counts the disk's bytes either way; it throttles only a slow origin.
[ "$origin_mbps" -eq 0 ] || echo "$dev $((origin_mbps * 1000 * 1000))" > "$cg/blkio.throttle.read_bps_device"
run_in_cg() { sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"; }

results="$work/results.jsonl"
epoch_args=(--epochs "$epochs" --batch-size "$batch" --workers "$workers" --compute-ms "$compute_ms" --blkio-cgroup "$cg")
[ "$origin_mbps" -eq 0 ] || epoch_args+=(--evict "$origin")
tag() { "$python" -c 'import json, sys
for line in sys.stdin: r = json.loads(line); r["config"], r["run"] = sys.argv[1], int(sys.argv[2]); print(json.dumps(r))' "$@"; }

mount_it() {
    run_in_cg "$tc_fuse" "$origin" "$mnt" --dram "$dram" --prefetch-threads "$prefetch_threads" \
        --log "$work/fuse.log" "${fuse_opts[@]}"
    for _ in $(seq 300); do [ -e "$mnt/.tiercache/stats" ] && break; sleep 0.1; done
    [ -e "$mnt/.tiercache/stats" ] || { log "the mount did not come up"; exit 1; }
}
unmount_it() { fusermount3 -u "$mnt"; for _ in $(seq 100); do is_mounted "$mnt" || break; sleep 0.1; done; sleep 0.5; }

for run in $(seq "$runs"); do
    log "run $run/$runs: native (DataLoader shuffle=True on the origin)"
    run_in_cg "$python" bench/pytorch_epoch.py "$origin" --sampler shuffle --seed "$run" "${epoch_args[@]}" | tag native "$run" >> "$results"
    log "run $run/$runs: mount, no plan"
    mount_it
    run_in_cg "$python" bench/pytorch_epoch.py "$mnt" --sampler shuffle --seed "$run" "${epoch_args[@]}" | tag mount "$run" >> "$results"
    unmount_it
    log "run $run/$runs: mount, TiercacheSampler writing the plan"
    mount_it
    run_in_cg "$python" bench/pytorch_epoch.py "$mnt" --sampler plan --seed "$run" "${epoch_args[@]}" | tag plan "$run" >> "$results"
    unmount_it
done

mkdir -p bench/results
report="bench/results/pytorch_epoch-$(date -u +%Y%m%d-%H%M%S).md"
report_args=(--dataset-bytes "$(du -sb "$origin" | cut -f1)" --note "$dataset_note"
    --host "$(date -u +%Y-%m-%d), $(nproc) CPUs, kernel $(uname -r)" --origin-mbps "$origin_mbps" --dram "$dram"
    --batch "$batch" --workers "$workers" --compute-ms "$compute_ms" --prefetch-threads "$prefetch_threads" --runs "$runs")
[ -z "${RESULT_JSON:-}" ] || report_args+=(--json "$RESULT_JSON")
"$python" bench/pytorch_report.py "$results" "${report_args[@]}" > "$report"
cat "$report"
log "written to $report"
