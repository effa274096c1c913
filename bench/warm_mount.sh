#!/usr/bin/env bash
# Warm-mount read benchmark: reads a dataset through a warm tiercache mount in shuffled order,
# with 1 and 4 readers, against native reads of the origin through the kernel page cache,
# measured side by side in the same invocation (DESIGN.md section 7: report ratios).
#
#   bench/warm_mount.sh              # generates FILES files (default 20000) in a temp dir
#   bench/warm_mount.sh DATASET_DIR  # or reads an existing dataset (never written)
#
# Environment: FILES (20000), DRAM (4GiB, must hold the dataset), RUNS (3), READERS ("1 4"),
# TIERCACHE_FUSE_OPTS (extra tiercache-fuse options, e.g. "--kernel-cache off"),
# TIERCACHE_BENCH_DIR (parent of the temp dir, default /tmp).
#
# Prints a Markdown table (medians of RUNS runs; native and mount runs alternate, each pair
# with the same seed, so the same order) and writes it to bench/results/warm_mount-<date>.md.
# The mount is unmounted and temp files removed on every exit path, Ctrl-C included.
set -euo pipefail

cd "$(dirname "$0")/.."

files="${FILES:-20000}"
dram="${DRAM:-4GiB}"
runs="${RUNS:-3}"
readers_list="${READERS:-1 4}"
read -r -a fuse_opts <<< "${TIERCACHE_FUSE_OPTS:-}"
dataset="${1:-}"

tc=build/cache/tiercache
tc_fuse=build/fuse/tiercache-fuse

# shellcheck source=scripts/lib/mount.sh
source scripts/lib/mount.sh

work=""
mnt=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [ -z "$mnt" ] || unmount_safely "$mnt" warm_mount
    # Never delete through a live mount; a DATASET_DIR given to us is not under $work.
    if [ -n "$work" ] && ! { [ -n "$mnt" ] && is_mounted "$mnt"; }; then
        rm -rf "$work"
    fi
    [ "$status" -eq 0 ] || echo "warm_mount: failed (exit status $status)" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'warm_mount: %s\n' "$*" >&2; }

if [ ! -x "$tc" ] || [ ! -x "$tc_fuse" ]; then
    log "building $tc and $tc_fuse"
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >&2
    cmake --build build -j2 --target tiercache-cli tiercache-fuse >&2
fi

parent="${TIERCACHE_BENCH_DIR:-/tmp}"
mkdir -p "$parent"
work="$(mktemp -d "$(realpath "$parent")/tiercache-bench.XXXXXX")"
mnt="$work/mnt"

if [ -n "$dataset" ]; then
    [ -d "$dataset" ] || { echo "warm_mount: dataset '$dataset' is not a directory" >&2; exit 1; }
    origin="$(realpath "$dataset")"
    dataset_note="existing dataset $origin"
else
    origin="$work/origin"
    log "generating $files files into $origin"
    "$tc" gen "$origin" --files "$files" --classes 100 --seed 1 >&2
    dataset_note="tiercache gen --files $files --classes 100 --seed 1"
fi

log "mounting $origin at $mnt: tiercache-fuse --dram $dram ${fuse_opts[*]}"
mkdir "$mnt"
"$tc_fuse" "$origin" "$mnt" --dram "$dram" "${fuse_opts[@]}"
for _ in $(seq 300); do
    [ -e "$mnt/.tiercache/stats" ] && break
    sleep 0.1
done
[ -e "$mnt/.tiercache/stats" ] || { echo "warm_mount: $mnt/.tiercache/stats did not appear within 30 s" >&2; exit 1; }

# One pass each fills the origin's page cache and the mount's cache; the digests prove that the
# mount returns the origin's bytes, so we never time a mount that reads wrong data.
digest() { python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["digest"])'; }
log "warming the origin's page cache (one pass)"
native_digest="$("$tc" bench read "$origin" --readers 4 --verify --json | digest)"
log "warming the mount (one pass)"
mount_digest="$("$tc" bench read "$mnt" --readers 4 --verify --json | digest)"
if [ "$native_digest" != "$mount_digest" ]; then
    echo "warm_mount: the mount's bytes differ from the origin's (digest $mount_digest, origin $native_digest)" >&2
    exit 1
fi

# Each measured run appends "<side> <readers> <bench read JSON>" to runs.txt; the mount's stats
# are saved around each reader count's mount runs to count FUSE requests per file.
for readers in $readers_list; do
    cat "$mnt/.tiercache/stats" > "$work/stats-before-$readers.json"
    for run in $(seq "$runs"); do
        # Alternate which side goes first, so drift over time does not favour one side.
        if [ $((run % 2)) -eq 1 ]; then sides="native mount"; else sides="mount native"; fi
        for side in $sides; do
            if [ "$side" = native ]; then dir="$origin"; else dir="$mnt"; fi
            log "readers $readers, run $run/$runs, $side"
            printf '%s %s %s\n' "$side" "$readers" \
                "$("$tc" bench read "$dir" --readers "$readers" --seed "$run" --json)" >> "$work/runs.txt"
        done
    done
    cat "$mnt/.tiercache/stats" > "$work/stats-after-$readers.json"
done

mkdir -p bench/results
report="bench/results/warm_mount-$(date -u +%Y%m%d-%H%M%S).md"
host="$(nproc) CPUs, kernel $(uname -r), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM"
mount_note="tiercache-fuse --dram $dram${fuse_opts[*]:+ ${fuse_opts[*]}} ($("$tc_fuse" --version 2>/dev/null || echo "version unknown"))"
python3 - "$work" "$readers_list" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$host" "$dataset_note" "$mount_note" "$runs" \
    > "$report" <<'EOF'
import json, statistics, sys

work, readers_list, date, host, dataset_note, mount_note, run_count = sys.argv[1:]
readers_list = [int(r) for r in readers_list.split()]
runs = {}  # (side, readers) -> [bench read JSON objects]
for line in open(f"{work}/runs.txt"):
    side, readers, result = line.split(" ", 2)
    runs.setdefault((side, int(readers)), []).append(json.loads(result))

def requests(path):
    return json.load(open(path)).get("fuse", {}).get("requests", {})

def rates(side, readers):
    return [r["files_per_s"] for r in runs[(side, readers)]]

first = runs[("native", readers_list[0])][0]
print("## Warm mount vs native page cache: shuffled whole-file reads")
print()
print(f"- date: {date}; host: {host}")
print(f"- dataset: {first['files']:,} files, {first['bytes'] / 2**30:.2f} GiB ({dataset_note})")
print(f"- mount: {mount_note}; origin and mount each warmed by one full pass before measuring")
print("- reader: tiercache bench read (open, read 1 MiB chunks, close), shuffled by seed, the same "
      f"order on both sides; medians of {run_count} runs, native and mount runs alternated")
print()
print("| readers | native files/s | mount files/s | ratio | mount requests/file |")
print("|---:|---:|---:|---:|---:|")
details = []
for readers in readers_list:
    native = statistics.median(rates("native", readers))
    mount = statistics.median(rates("mount", readers))
    before = requests(f"{work}/stats-before-{readers}.json")
    after = requests(f"{work}/stats-after-{readers}.json")
    delta = {op: after[op] - before.get(op, 0) for op in after}
    files_read = sum(r["files"] for r in runs[("mount", readers)])
    per_file = sum(delta.values()) / files_read if files_read else float("nan")
    print(f"| {readers} | {native:,.0f} | {mount:,.0f} | {mount / native:.2f}x | {per_file:.3f} |")
    ops = ", ".join(f"{op} {n:,}" for op, n in delta.items() if n) or "none"
    listed = lambda side: " / ".join(f"{rate:,.0f}" for rate in rates(side, readers))
    details.append(f"- {readers} reader(s): native runs {listed('native')}, mount runs {listed('mount')} "
                   f"files/s; FUSE requests over {files_read:,} file reads: {ops}")
print()
print("\n".join(details))
print()
print("Requests are the mount's FUSE counters (its stats JSON) taken around its measured runs, so they "
      "include each run's directory listing and the two stats reads.")
EOF
cat "$report"
log "written to $report"
