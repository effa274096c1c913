#!/usr/bin/env bash
# Warm-mount read benchmark: reads a dataset in shuffled order, every file whole, with 1, 4 and 8
# readers, three ways measured side by side in the same invocation (DESIGN.md section 7: report
# ratios):
#   native       the origin directory, through the kernel page cache (warm);
#   mount        a warm tiercache mount (tiercache-fuse --dram DRAM, default options: kernel cache
#                auto, so on, the dataset fitting the dram tier);
#   passthrough  a second mount of the same origin with caching off (--dram 0 --kernel-cache off):
#                a plain FUSE passthrough, every read through FUSE to the origin.
#
#   bench/warm_mount.sh              # generates FILES files (default 20000) in a temp dir
#   bench/warm_mount.sh DATASET_DIR  # or reads an existing dataset (never written)
#
# Environment: FILES (20000), DRAM (4GiB, must hold the dataset), RUNS (3), READERS ("1 4 8"),
# TIERCACHE_FUSE_OPTS (extra options for the mount under test, e.g. "--threads 2"), BUILD_DIR
# (build; built there, Release, if its binaries are missing), EVICT_ORIGIN (1: the origin's
# pages are evicted first, so both page caches are built by reads; 0: kept as they are),
# TIERCACHE_BENCH_DIR (parent of the temp dir, default /tmp), RESULT_JSON (if set, bench/run's
# summary rows are written there).
#
# Prints a Markdown table (medians of RUNS runs; the three sides alternate in each run, each with
# the same seed, so the same order) and writes it to bench/results/warm_mount-<date>.md. Both
# mounts are unmounted and temp files removed on every exit path, Ctrl-C included.
set -euo pipefail

cd "$(dirname "$0")/.."

files="${FILES:-20000}"
dram="${DRAM:-4GiB}"
runs="${RUNS:-3}"
readers_list="${READERS:-1 4 8}"
read -r -a fuse_opts <<< "${TIERCACHE_FUSE_OPTS:-}"
build_dir="${BUILD_DIR:-build}"
evict_origin="${EVICT_ORIGIN:-1}"
dataset="${1:-}"
passthrough_opts=(--dram 0 --kernel-cache off)

tc="$build_dir/cache/tiercache"
tc_fuse="$build_dir/fuse/tiercache-fuse"

# shellcheck source=scripts/lib/mount.sh
source scripts/lib/mount.sh

work=""
mounts=()  # every mountpoint made so far: each is unmounted on the way out
cleanup() {
    local status=$?
    trap - EXIT
    trap '' INT TERM  # a second Ctrl-C must not cut the cleanup short
    local m still=0
    for m in "${mounts[@]}"; do
        unmount_safely "$m" warm_mount
        ! is_mounted "$m" || still=1
    done
    # Never delete through a live mount; a DATASET_DIR given to us is not under $work.
    [ -z "$work" ] || [ "$still" -ne 0 ] || rm -rf "$work"
    [ "$status" -eq 0 ] || echo "warm_mount: failed (exit status $status)" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'warm_mount: %s\n' "$*" >&2; }

for r in $readers_list; do
    [[ "$r" =~ ^[1-9][0-9]*$ ]] || { echo "warm_mount: READERS must list reader counts, not '$r'" >&2; exit 2; }
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "warm_mount: RUNS must be 1 or more, not '$runs'" >&2; exit 2; }
[[ "$evict_origin" =~ ^[01]$ ]] || { echo "warm_mount: EVICT_ORIGIN must be 0 or 1, not '$evict_origin'" >&2; exit 2; }

if [ ! -x "$tc" ] || [ ! -x "$tc_fuse" ]; then
    log "building $tc and $tc_fuse"
    cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >&2
    cmake --build "$build_dir" -j2 --target tiercache-tools >&2
fi

parent="${TIERCACHE_BENCH_DIR:-/tmp}"
mkdir -p "$parent"
work="$(mktemp -d "$(realpath "$parent")/tiercache-bench.XXXXXX")"

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

mount_at() {  # mountpoint, options...: mounts the origin there and waits for its stats file
    local at=$1
    shift
    log "mounting $origin at $at: tiercache-fuse $*"
    mkdir "$at"
    mounts+=("$at")
    "$tc_fuse" "$origin" "$at" "$@"
    for _ in $(seq 300); do
        [ -e "$at/.tiercache/stats" ] && return 0
        sleep 0.1
    done
    echo "warm_mount: $at/.tiercache/stats did not appear within 30 s" >&2
    exit 1
}
mount_at "$work/mnt" --dram "$dram" "${fuse_opts[@]}"
mount_at "$work/passthrough" "${passthrough_opts[@]}"

dir_of() {  # side: the directory it reads
    case "$1" in
        native) echo "$origin" ;;
        mount) echo "$work/mnt" ;;
        passthrough) echo "$work/passthrough" ;;
    esac
}

# Both page caches are built by reads, at the same time. The origin's pages are evicted first
# (written back, then dropped with POSIX_FADV_DONTNEED; no root needed): files just written by
# `tiercache gen` sit in the page cache in large folios, as writes leave them, while reads of a
# small file, on ext4 and through FUSE alike, bring it in 4 KiB pages, so a write-warmed origin
# would be a baseline no host that read its dataset from storage has. The mount's first pass then
# reads the cold origin through the daemon: the origin's pages and the mount's are allocated in
# the same pass, from the same free memory. EVICT_ORIGIN=0 keeps the origin's page cache as it is.
if [ "$evict_origin" = 1 ]; then
    log "evicting the origin's pages from the page cache (written back first)"
    python3 - "$origin" <<'PY'
import os, sys
for d, _, files in os.walk(sys.argv[1]):
    for name in files:
        try:
            fd = os.open(os.path.join(d, name), os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fdatasync(fd)
        except OSError:
            pass
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
PY
    if command -v fincore > /dev/null; then
        resident="$(find "$origin" -type f -print0 | xargs -0 -r fincore --bytes --noheadings --raw -o RES |
            awk '{ s += $1 } END { printf "%.1f MiB", s / 1048576 }')"
        log "origin pages left in the page cache: $resident"
    fi
fi

# One verified pass through each side: the digests prove that both mounts return the origin's
# bytes, so we never time a mount that reads wrong data. Then one more pass over the origin and
# the mount, so that every page of both has been read twice (active on the kernel's LRU lists,
# as in every later epoch) before any run is timed. The passthrough keeps nothing.
digest() { python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["digest"])'; }
log "one verified pass through the mount (it reads the origin through the daemon)"
mount_digest="$("$tc" bench read "$work/mnt" --readers 4 --verify --json | digest)"
log "one verified pass over the origin"
native_digest="$("$tc" bench read "$origin" --readers 4 --verify --json | digest)"
log "one verified pass through the passthrough"
passthrough_digest="$("$tc" bench read "$work/passthrough" --readers 4 --verify --json | digest)"
for pair in "mount $mount_digest" "passthrough $passthrough_digest"; do
    read -r side side_digest <<< "$pair"
    if [ "$side_digest" != "$native_digest" ]; then
        echo "warm_mount: the $side's bytes differ from the origin's (digest $side_digest, origin $native_digest)" >&2
        exit 1
    fi
done
for side in mount native; do
    log "a second warming pass: $side"
    "$tc" bench read "$(dir_of "$side")" --readers 4 --seed 999 --json > /dev/null
done

# Each measured run appends "<side> <readers> <bench read JSON>" to runs.txt; each mount's stats
# are saved around each reader count's runs to count FUSE requests (and origin reads) per file.
sides=(native mount passthrough)
for readers in $readers_list; do
    for side in mount passthrough; do cat "$(dir_of "$side")/.tiercache/stats" > "$work/stats-$side-before-$readers.json"; done
    for run in $(seq "$runs"); do
        # Rotate which side goes first, so drift over time favours none of them.
        for k in 0 1 2; do
            side="${sides[$(((run - 1 + k) % 3))]}"
            log "readers $readers, run $run/$runs, $side"
            printf '%s %s %s\n' "$side" "$readers" \
                "$("$tc" bench read "$(dir_of "$side")" --readers "$readers" --seed "$run" --json)" >> "$work/runs.txt"
        done
    done
    for side in mount passthrough; do cat "$(dir_of "$side")/.tiercache/stats" > "$work/stats-$side-after-$readers.json"; done
done

mkdir -p bench/results
report="bench/results/warm_mount-$(date -u +%Y%m%d-%H%M%S).md"
host="$(date -u +%Y-%m-%d), $(nproc) CPUs, kernel $(uname -r), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM"
version="$("$tc_fuse" --version 2>/dev/null || echo "version unknown")"
mount_note="tiercache-fuse --dram $dram${fuse_opts[*]:+ ${fuse_opts[*]}}"
passthrough_note="tiercache-fuse ${passthrough_opts[*]}"
python3 - "$work" "$readers_list" "$host" "$dataset_note" "$mount_note" "$passthrough_note" "$version" "$runs" \
    "$evict_origin" "${RESULT_JSON:-}" > "$report" <<'EOF'
import json, statistics, sys

work, readers_list, host, dataset_note, mount_note, passthrough_note, version, run_count, evict_origin, result_json = sys.argv[1:]
readers_list = [int(r) for r in readers_list.split()]
runs = {}  # (side, readers) -> [bench read JSON objects]
for line in open(f"{work}/runs.txt"):
    side, readers, result = line.split(" ", 2)
    runs.setdefault((side, int(readers)), []).append(json.loads(result))

def rates(side, readers):
    return [r["files_per_s"] for r in runs[(side, readers)]]

def median(side, readers):
    return statistics.median(rates(side, readers))

def per_file(side, readers):
    """FUSE requests by operation, and origin reads, over the side's measured file reads."""
    before = json.load(open(f"{work}/stats-{side}-before-{readers}.json"))
    after = json.load(open(f"{work}/stats-{side}-after-{readers}.json"))
    ops = {op: n - before["fuse"]["requests"].get(op, 0) for op, n in after["fuse"]["requests"].items()}
    ops = {op: n for op, n in ops.items() if n}
    files = sum(r["files"] for r in runs[(side, readers)])
    origin = after["origin"]["reads"] - before["origin"]["reads"]
    return sum(ops.values()) / files, ops, origin / files, files

first = runs[("native", readers_list[0])][0]
warmed = ("the origin's page cache evicted, then both page caches built by reads (the mount's first pass "
          "reading the cold origin), two warming passes each" if evict_origin == "1" else
          "the origin's page cache kept as it was (EVICT_ORIGIN=0), two warming passes each")
setup = (f"{host}; {first['files']:,} files, {first['bytes'] / 2**30:.2f} GiB ({dataset_note}); "
         f"mount: {mount_note}; passthrough: {passthrough_note} ({version}); every file read whole "
         f"(tiercache bench read: open, 1 MiB reads, close) in a shuffled order, the same on every side; "
         f"{warmed}; {'1 run' if run_count == '1' else f'medians of {run_count} runs'}, the sides alternated")

print("## Warm mount, shuffled whole-file reads: native page cache, our mount, our uncached passthrough")
print()
print(f"- setup: {setup}")
print(f"- native: the origin directory, warm in the page cache; mount: `{mount_note}`, warm in its tier and "
      f"the kernel's page cache; passthrough: `{passthrough_note}` (no tier, no kernel page cache: every read "
      f"goes through FUSE to the origin)")
print()
print("| readers | native files/s | mount files/s | passthrough files/s | mount / native | mount / passthrough "
      "| mount requests/file | passthrough requests/file |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
details = []
rows = {}
for readers in readers_list:
    native, mount, passthrough = (median(s, readers) for s in ("native", "mount", "passthrough"))
    m_req, m_ops, _, m_files = per_file("mount", readers)
    p_req, p_ops, p_origin, p_files = per_file("passthrough", readers)
    print(f"| {readers} | {native:,.0f} | {mount:,.0f} | {passthrough:,.0f} | {mount / native:.2f}x "
          f"| {mount / passthrough:.2f}x | {m_req:.3f} | {p_req:.2f} |")
    listed = lambda side: " / ".join(f"{rate:,.0f}" for rate in rates(side, readers))
    ops = lambda d: ", ".join(f"{op} {n:,}" for op, n in d.items()) or "none"
    details.append(f"- {readers} reader(s): runs native {listed('native')}, mount {listed('mount')}, passthrough "
                   f"{listed('passthrough')} files/s; FUSE requests over {m_files:,} mount file reads: {ops(m_ops)}; "
                   f"over {p_files:,} passthrough file reads: {ops(p_ops)} ({p_origin:.2f} origin reads a file)")
    rows[readers] = (native, mount, passthrough)
print()
print("\n".join(details))
print()
print("Requests are each mount's FUSE counters (its stats JSON) taken around its measured runs, so they "
      "include each run's directory listing and the stats reads.")

if result_json:
    def row(readers, against, target):
        native, mount, passthrough = rows[readers]
        baseline = native if against == "native" else passthrough
        ratio = mount / baseline
        name = "native page cache" if against == "native" else "our uncached passthrough"
        limit = {"native": 0.9, "passthrough": 1.5}[against]
        return {"measure": f"{readers} reader{'s' if readers != 1 else ''} vs {name}", "ours": round(mount, 1),
                "baseline": round(baseline, 1), "unit": "files/s", "ratio": round(ratio, 4),
                "target": f">= {limit:g}x" if target else "", "met": (ratio >= limit) if target else None}
    order = [r for r in readers_list if r == 4] + [r for r in readers_list if r != 4]
    out = {"workload": "warm_mount", "title": "Warm mount, shuffled whole-file reads", "setup": setup,
           "rows": [row(r, against, r == 4) for r in order for against in ("native", "passthrough")]}
    with open(result_json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
EOF
cat "$report"
log "written to $report${RESULT_JSON:+ and $RESULT_JSON}"
