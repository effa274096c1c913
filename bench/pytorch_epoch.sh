#!/usr/bin/env bash
# PyTorch epochs over a slow origin (DESIGN.md section 7): the same training loop
# (examples/pytorch/train_imagefolder.py: ImageFolder of raw bytes, DataLoader with 4 workers,
# a fixed sleep per batch for compute) over the same generated dataset, side by side (CONFIGS):
#   native       DataLoader(shuffle=True) reading the origin directory directly
#   mount        the same DataLoader(shuffle=True) through tiercache-fuse, no plan written
#   plan         through tiercache-fuse with TiercacheSampler writing each epoch's order to the plan
#   dataset      the same DataLoader(shuffle=True) over tiercache.torch.Dataset: no mount, a cache
#                the loop opens with share=NAME (tiercache.open), its workers attach to it; raw
#                bytes collated by tiercache.torch.collate (one tensor a batch from a worker)
#   epochloader  tiercache.torch.EpochLoader over that Dataset (PREFETCH_THREADS I/O threads,
#                DEPTH batches ahead), no workers: decoding, if any, by its decode threads (one
#                a CPU) ahead of the training loop
# DECODE=on decodes real JPEGs (torchvision.io.decode_jpeg, Resize, CenterCrop, to float) in
# every loader: JPEGS=1 generates them (bench/make_jpegs.py, Pillow) in place of tiercache gen's
# JPEG-sized noise. MODES runs several origins in one go on the same dataset, e.g. "0:0 50:40":
# a local warm origin without compute, then a slow one with 40 ms a batch; DECODE="off on" both.
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
#   JPEGS=1 CONFIGS="native mount dataset epochloader" MODES="0:0 50:40" DECODE="off on" bench/pytorch_epoch.sh
#
# Environment: FILES (3000), RUNS (3), EPOCHS (3), ORIGIN_MBPS (50), DRAM (1GiB: holds the
# dataset), BATCH (32), WORKERS (4), COMPUTE_MS (40, per batch), PREFETCH_THREADS (4), DEPTH (4),
# CONFIGS ("native mount plan"), MODES ("ORIGIN_MBPS:COMPUTE_MS" pairs; default one, from those
# two), DECODE ("off", or "on", or both), JPEGS (0), TIERCACHE_FUSE_OPTS (extra tiercache-fuse
# options), BUILD_DIR (build), WORKLOAD (the name of bench/run's summary rows, pytorch).
# Needs root (cgroups) and /usr/bin/python3 with torch and torchvision
# (scripts/install-deps --torch). Prints a Markdown table and writes it to
# bench/results/pytorch_epoch-<date>.md (the epochs' JSON lines next to it, .jsonl); with RESULT_JSON=FILE also the bench/run summary rows
# (images/s of each configuration against native's; the EpochLoader's epoch time against the
# compute alone). The mount, the cgroup, the shared cache's segment and the temporary files are
# removed on every way out, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/.."

files="${FILES:-3000}"
runs="${RUNS:-3}"
epochs="${EPOCHS:-3}"
read -r -a modes <<< "${MODES:-${ORIGIN_MBPS:-50}:${COMPUTE_MS:-40}}"
dram="${DRAM:-1GiB}"
batch="${BATCH:-32}"
workers="${WORKERS:-4}"
prefetch_threads="${PREFETCH_THREADS:-4}"
depth="${DEPTH:-4}"
read -r -a configs <<< "${CONFIGS:-native mount plan}"
read -r -a decodes <<< "${DECODE:-off}"
jpegs="${JPEGS:-0}"
read -r -a fuse_opts <<< "${TIERCACHE_FUSE_OPTS:-}"
build="${BUILD_DIR:-build}"
dataset="${1:-}"
tc="$build/cache/tiercache"
tc_fuse="$build/fuse/tiercache-fuse"
python=/usr/bin/python3
cg=/sys/fs/cgroup/blkio/tc-bench-torch
share="tc-bench-torch-$$"  # the dataset and epochloader configurations' shared cache

log() { printf 'pytorch_epoch: %s\n' "$*" >&2; }
[ -d "$(dirname "$cg")" ] || { log "no cgroup v1 blkio controller at $(dirname "$cg")"; exit 1; }
[ "$(id -u)" -eq 0 ] || { log "needs root (cgroups)"; exit 1; }
"$python" -c 'import torch, torchvision, PIL' 2>/dev/null || { log "$python lacks torch/torchvision/PIL: scripts/install-deps --torch"; exit 1; }
for c in "${configs[@]}"; do
    [[ " native mount plan dataset epochloader " == *" $c "* ]] || { log "unknown configuration '$c' in CONFIGS"; exit 2; }
done
[[ " ${configs[*]} " == *" native "* ]] || { log "CONFIGS needs native: the baseline"; exit 2; }
for d in "${decodes[@]}"; do [[ "$d" == on || "$d" == off ]] || { log "DECODE: on, off or both, not '$d'"; exit 2; }; done
for m in "${modes[@]}"; do [[ "$m" =~ ^[0-9]+:[0-9.]+$ ]] || { log "MODES: ORIGIN_MBPS:COMPUTE_MS pairs, not '$m'"; exit 2; }; done

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
    # A driver killed before it closed its shared cache leaves the segment behind.
    rm -f /dev/shm/tiercache-"$share".*
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
    if [ "$jpegs" = 1 ]; then
        dataset_note="real JPEGs: bench/make_jpegs.py --files $files --classes 100 --seed 5 (Pillow, 200-500 px, quality 85)"
        log "generating $files JPEGs into $origin"
        "$python" bench/make_jpegs.py "$origin" --files "$files" --classes 100 --seed 5
    else
        dataset_note="tiercache gen --files $files --classes 100 --seed 5"
        log "generating $files files into $origin"
        "$tc" gen "$origin" --files "$files" --classes 100 --seed 5 >&2
    fi
fi
dev="$(findmnt -no MAJ:MIN -T "$origin" | tr -d ' ')"
mkdir -p "$cg"
# The cgroup counts the disk's bytes either way; it throttles only a slow origin (0: none).
throttle() { echo "$dev $(($1 * 1000 * 1000))" > "$cg/blkio.throttle.read_bps_device"; }
run_in_cg() { sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"; }

results="$work/results.jsonl"
tag() { "$python" -c 'import json, sys
for line in sys.stdin:
    r = json.loads(line)
    r["config"], r["run"], r["origin_mbps"], r["compute_ms"], r["decode"] = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    print(json.dumps(r))' "$@"; }

mount_it() {
    run_in_cg "$tc_fuse" "$origin" "$mnt" --dram "$dram" --prefetch-threads "$prefetch_threads" \
        --log "$work/fuse.log" "${fuse_opts[@]}"
    for _ in $(seq 300); do [ -e "$mnt/.tiercache/stats" ] && break; sleep 0.1; done
    [ -e "$mnt/.tiercache/stats" ] || { log "the mount did not come up"; exit 1; }
}
unmount_it() { fusermount3 -u "$mnt"; for _ in $(seq 100); do is_mounted "$mnt" || break; sleep 0.1; done; sleep 0.5; }

run_config() {  # config run origin_mbps compute_ms decode: one configuration's epochs, from cold
    local config=$1 run=$2 origin_mbps=$3 compute_ms=$4 decode=$5
    local -a args=(--epochs "$epochs" --batch-size "$batch" --workers "$workers" --compute-ms "$compute_ms"
        --blkio-cgroup "$cg" --seed "$run")
    [ "$origin_mbps" -eq 0 ] || args+=(--evict "$origin")
    [ "$decode" = off ] || args+=(--decode)
    log "run $run/$runs, origin ${origin_mbps} MB/s (0: local), compute $compute_ms ms, decode $decode: $config"
    case "$config" in
        native) args=("$origin" --sampler shuffle "${args[@]}") ;;
        mount) mount_it; args=("$mnt" --sampler shuffle "${args[@]}") ;;
        plan) mount_it; args=("$mnt" --sampler plan "${args[@]}") ;;
        dataset | epochloader) args=("$origin" --loader "$config" --dram "$dram" --share "$share"
            --threads "$prefetch_threads" --depth "$depth" "${args[@]}") ;;
    esac
    run_in_cg "$python" bench/pytorch_epoch.py "${args[@]}" | tag "$config" "$run" "$origin_mbps" "$compute_ms" "$decode" >> "$results"
    if [ "$config" = mount ] || [ "$config" = plan ]; then unmount_it; fi
}

for run in $(seq "$runs"); do
    for mode in "${modes[@]}"; do
        throttle "${mode%%:*}"
        for decode in "${decodes[@]}"; do
            for config in "${configs[@]}"; do run_config "$config" "$run" "${mode%%:*}" "${mode#*:}" "$decode"; done
        done
    done
done

mkdir -p bench/results
report="bench/results/pytorch_epoch-$(date -u +%Y%m%d-%H%M%S).md"
report_args=(--dataset-bytes "$(du -sb "$origin" | cut -f1)" --note "$dataset_note"
    --host "$(date -u +%Y-%m-%d), $(nproc) CPUs, kernel $(uname -r)" --dram "$dram" --batch "$batch"
    --workers "$workers" --prefetch-threads "$prefetch_threads" --depth "$depth" --runs "$runs" --workload "${WORKLOAD:-pytorch}")
[ -z "${RESULT_JSON:-}" ] || report_args+=(--json "$RESULT_JSON")
"$python" bench/pytorch_report.py "$results" "${report_args[@]}" > "$report"
cp "$results" "${report%.md}.jsonl"  # the epochs themselves: pytorch_report.py renders them again
cat "$report"
log "written to $report"
