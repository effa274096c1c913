#!/usr/bin/env bash
# One large file read at random through the mount, by fio (a reader users have), against fio on
# the origin file itself, warm, in the same run: random 4 KiB and 128 KiB preads (psync, 1 and
# 4 jobs), IOPS medians of RUNS runs. The mount is tried as users mount it (default options:
# the kernel's page cache on) and with --kernel-cache off (every read reaches the daemon, served
# from its dram tier). fio runs with --invalidate=0: by default it drops the file's page cache
# first, which would make the native side cold. Issue 16's target: warm random reads at least
# 0.9x native page-cache reads through the mount (default options).
#
#   bench/large_file_mount.sh                  # a 1 GiB file of random bytes
#   SIZE_MIB=256 RUNS=1 SECONDS_EACH=2 bench/large_file_mount.sh
#
# Environment: SIZE_MIB (1024), RUNS (3), SECONDS_EACH (5: fio's time per measure), BUILD_DIR
# (build), TIERCACHE_BENCH_DIR (/var/tmp), RESULT_JSON (bench/run's summary rows). Needs fio.
# The mounts are unmounted and the file removed on every way out.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib="${SIZE_MIB:-1024}"
runs="${RUNS:-3}"
seconds_each="${SECONDS_EACH:-5}"
build="${BUILD_DIR:-build}"
tc_fuse="$build/fuse/tiercache-fuse"
log() { printf 'large_file_mount: %s\n' "$*" >&2; }
command -v fio > /dev/null || { log "needs fio (apt install fio, or scripts/install-deps --bench)"; exit 1; }
[[ "$size_mib" =~ ^[1-9][0-9]*$ && "$runs" =~ ^[1-9][0-9]*$ && "$seconds_each" =~ ^[1-9][0-9]*$ ]] ||
    { log "SIZE_MIB, RUNS and SECONDS_EACH must be positive numbers"; exit 2; }

# shellcheck source=scripts/lib/mount.sh
source scripts/lib/mount.sh
work=""
mounts=()
cleanup() {
    local status=$? m still=0
    trap - EXIT
    trap '' INT TERM
    for m in "${mounts[@]}"; do
        unmount_safely "$m" large_file_mount
        ! is_mounted "$m" || still=1
    done
    [ -z "$work" ] || [ "$still" -ne 0 ] || rm -rf "$work"
    [ "$status" -eq 0 ] || log "failed (exit status $status)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ ! -x "$tc_fuse" ]; then
    [ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >&2
    cmake --build "$build" -j2 --target tiercache-tools >&2
fi
parent="${TIERCACHE_BENCH_DIR:-/var/tmp}"
work="$(mktemp -d "$(realpath "$parent")/tiercache-lfm.XXXXXX")"
mkdir "$work/origin"
log "writing a ${size_mib} MiB file of random bytes"
head -c $((size_mib * 1048576)) /dev/urandom > "$work/origin/data.bin"

mount_at() {  # mountpoint, options...
    local at=$1
    shift
    mkdir "$at"
    mounts+=("$at")
    "$tc_fuse" "$work/origin" "$at" --dram "$((size_mib * 2))MiB" "$@" --log "$at.log"
    for _ in $(seq 300); do [ -e "$at/.tiercache/stats" ] && return 0; sleep 0.1; done
    log "$at did not come up (see $at.log)"
    exit 1
}
mount_at "$work/mnt" "--kernel-cache" on
mount_at "$work/mnt-direct" "--kernel-cache" off

# Warm: each side read whole once (the origin into the page cache, the mounts into their tiers
# and, for the default mount, the page cache).
for f in "$work/origin/data.bin" "$work/mnt/data.bin" "$work/mnt-direct/data.bin"; do cat "$f" > /dev/null; done

results="$work/results.txt"
fio_iops() {  # file bs jobs: IOPS of time-based random preads
    fio --name=r --filename="$1" --rw=randread --bs="$2" --numjobs="$3" --ioengine=psync --direct=0 --invalidate=0 \
        --time_based --runtime="$seconds_each" --group_reporting --output-format=json --randrepeat=0 2> /dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["jobs"][0]["read"]["iops"])'
}
for run in $(seq "$runs"); do
    for bs in 4k 128k; do
        for jobs in 1 4; do
            for side in native mount mount-direct; do
                case "$side" in
                    native) f="$work/origin/data.bin" ;;
                    mount) f="$work/mnt/data.bin" ;;
                    mount-direct) f="$work/mnt-direct/data.bin" ;;
                esac
                echo "$run $bs $jobs $side $(fio_iops "$f" "$bs" "$jobs")" >> "$results"
            done
        done
    done
    log "run $run/$runs done"
done

mkdir -p bench/results
report="bench/results/large_file_mount-$(date -u +%Y%m%d-%H%M%S).md"
python3 - "$results" "$size_mib" "$runs" "$seconds_each" "$(date -u +%Y-%m-%d), $(nproc) CPUs, kernel $(uname -r)" \
    "${RESULT_JSON:-}" > "$report" <<'EOF'
import json, statistics, sys
results, size_mib, runs, seconds_each, host, result_json = sys.argv[1:]
iops = {}
for line in open(results):
    run, bs, jobs, side, value = line.split()
    iops.setdefault((bs, int(jobs), side), []).append(float(value))
med = lambda k: statistics.median(iops[k])
setup = (f"one {size_mib} MiB file read at random by fio (psync, time-based {seconds_each} s a measure), warm; "
         f"medians of {runs} run(s); {host}")
print(f"# Large file through the mount, by fio\n\n{setup}\n")
print("| reads | jobs | native IOPS | mount IOPS (default) | ratio | mount IOPS (--kernel-cache off) | ratio |")
print("|---|---|---|---|---|---|---|")
rows = []
for bs in ("4k", "128k"):
    for jobs in (1, 4):
        n, m, d = med((bs, jobs, "native")), med((bs, jobs, "mount")), med((bs, jobs, "mount-direct"))
        print(f"| random {bs} | {jobs} | {n:,.0f} | {m:,.0f} | {m / n:.2f}x | {d:,.0f} | {d / n:.2f}x |")
        for side, ours, target in (("default options", m, True), ("--kernel-cache off", d, False)):
            rows.append({"measure": f"random {bs} reads, {jobs} job{'s' if jobs > 1 else ''}, mount ({side}) vs native page cache",
                         "ours": round(ours, 1), "baseline": round(n, 1), "unit": "IOPS", "ratio": round(ours / n, 4),
                         "target": ">= 0.9x" if target else "", "met": (ours / n >= 0.9) if target else None})
if result_json:
    with open(result_json, "w") as f:
        json.dump({"workload": "large_file_mount", "title": "A large file at random through the mount (fio)", "setup": setup,
                   "rows": rows}, f, indent=2)
        f.write("\n")
EOF
cat "$report"
log "written to $report${RESULT_JSON:+ and $RESULT_JSON}"
