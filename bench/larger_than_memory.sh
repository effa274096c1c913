#!/usr/bin/env bash
# Larger than memory: shuffled epochs over a dataset twice the DRAM budget (DESIGN.md section 7).
# Side by side in one run, each configuration starting cold (page cache dropped, fresh mount),
# READERS readers reading whole files:
#   native     the origin read directly, the reader in a memory cgroup limited to the budget
#              (the kernel page cache is then an LRU cache of that size)
#   dram       tiercache-fuse --dram BUDGET (noevict), kernel cache off
#   dram+nvme  the same plus --nvme on the local disk (noevict: what dram cannot hold is on nvme)
#   lru+nvme   the same with --policy lru
#   plan       --dram BUDGET, each epoch's order written to the plan file first (bench read --plan):
#              the mount prefetches ahead of the readers and places by next use
#   plan+nvme  the same plus --nvme
# Every mount configuration runs twice, once per MOUNT_MODES entry:
#   off        --kernel-cache off (direct I/O: every read reaches the daemon); the readers run
#              outside any cgroup, since the kernel keeps no page of the mount's files
#   default    the mount as users mount it (--kernel-cache auto: here off, since the dataset
#              fits neither the dram tier nor the memory left beside it in the daemon's cgroup;
#              the log says which); the readers run in the daemon's memory cgroup, so the page
#              cache of the mount's files and the dram tier share one budget, as on a host where
#              both live in one container (a reader cgroup of its own would give the page cache
#              a second budget)
#   on         as default with --kernel-cache on (the kernel keeps the pages read): not in the
#              default MOUNT_MODES; what auto chose against
# Its rows are named CONFIG (off), CONFIG:default and CONFIG:on.
# The daemon runs in a memory cgroup of BUDGET + SLACK_MIB (128 MiB: its dram tier lives in
# /dev/shm pages charged to it; the slack covers the segment's catalog and slots, its threads'
# buffers and the origin's pages in flight; 48 MiB got it OOM-killed), so no side gets more
# memory than the budget beyond bookkeeping: a much larger slack would let the page cache hold
# the samples the dram tier turned away, a second cache.
#
# The origin is slow, as the remote store (NFS, object store) a cache stands in front of: an
# ext4 image on a loop device (direct I/O, so the host's page cache holds no second copy) whose
# reads are throttled to ORIGIN_MBPS for the readers and the daemon (blkio cgroup). The nvme tier
# is a folder on the local disk, not throttled. ORIGIN_MBPS=0 reads a folder of the local disk
# directly instead: then the origin is as fast as the nvme tier (this machine's one disk).
#
#   bench/larger_than_memory.sh                 # BUDGET_MIB=512, a generated 1 GiB dataset
#   BUDGET_MIB=1024 RUNS=1 bench/larger_than_memory.sh [DATASET_DIR]
#
# SHARDS=1 makes the dataset WebDataset-style tar shards (bench/make_shards.py: KEY.jpg and
# KEY.cls members), indexed by `tiercache index`, and every side reads the members as records
# (bench read --records), shuffled across all the shards each epoch; the plan configurations
# write record plans (PATH OFFSET LENGTH). bench/run's `webdataset` workload.
#
# Environment: TIERCACHE_FUSE_OPTS (more mount options for every configuration, e.g.
# "--extent 128KiB"), BUDGET_MIB (512; with a DATASET_DIR, half of it by default), DATASET_PCT (200: the
# generated dataset's size, percent of the dram tier), DRAM_MIB (the dram tier: BUDGET_MIB; less
# leaves the rest of the budget to the daemon's other memory and, in mode default, to the page
# cache), MOUNT_MODES ("off default"), EPOCHS (3),
# READERS (4), RUNS (3: medians), ORIGIN_MBPS (200), SLACK_MIB (128), CONFIGS (all six; spaces or
# commas between), BUILD_DIR (build),
# RESULT_JSON (bench/run's summary rows). Needs root (cgroups, drop_caches, loop devices).
# Writes a Markdown table to stdout and bench/results/larger_than_memory-<date>.md. Mounts,
# the loop device, the cgroups and the temporary files are removed on every way out.
set -euo pipefail
cd "$(dirname "$0")/.."

epochs="${EPOCHS:-3}"
readers="${READERS:-4}"
runs="${RUNS:-3}"
origin_mbps="${ORIGIN_MBPS:-200}"
configs="${CONFIGS:-native dram dram+nvme lru+nvme plan plan+nvme}"
configs="${configs//,/ }"  # spaces or commas (bench/run's QUICK passes commas)
mount_modes="${MOUNT_MODES:-off default}"
mount_modes="${mount_modes//,/ }"
build="${BUILD_DIR:-build}"
read -r -a fuse_opts <<< "${TIERCACHE_FUSE_OPTS:-}"
dataset="${1:-}"
tc="$build/cache/tiercache"
tc_fuse="$build/fuse/tiercache-fuse"
mem_cg=/sys/fs/cgroup/memory
blk_cg=/sys/fs/cgroup/blkio
groups=(tc-bench-reader tc-bench-daemon)

log() { printf 'larger_than_memory: %s\n' "$*" >&2; }
[ -d "$mem_cg" ] && [ -d "$blk_cg" ] || { log "needs the cgroup v1 memory and blkio controllers ($mem_cg, $blk_cg)"; exit 1; }
[ -w /proc/sys/vm/drop_caches ] || { log "needs root (drop_caches, cgroups, loop devices)"; exit 1; }
if [ -n "$dataset" ] && [ ! -d "$dataset" ]; then log "dataset '$dataset' is not a directory"; exit 1; fi

# shellcheck source=scripts/lib/mount.sh
source scripts/lib/mount.sh
work=""
mnt=""
origin_mnt=""
loop=""
cleanup() {
    local status=$?
    trap - EXIT
    trap '' INT TERM  # a second Ctrl-C must not cut the cleanup short
    [ -z "$mnt" ] || unmount_safely "$mnt" larger_than_memory
    local root g p
    for root in "$mem_cg" "$blk_cg"; do
        for g in "${groups[@]}"; do
            [ -d "$root/$g" ] || continue
            for _ in 1 2 3 4 5 6 7 8 9 10; do  # a task killed a moment ago may still be leaving it
                while read -r p; do echo "$p" > "$root/cgroup.procs" 2>/dev/null || true; done < "$root/$g/cgroup.procs"
                rmdir "$root/$g" 2>/dev/null && break
                sleep 0.3
            done
            [ ! -d "$root/$g" ] || log "could not remove the cgroup $root/$g"
        done
    done
    if [ -n "$origin_mnt" ] && mountpoint -q "$origin_mnt"; then umount "$origin_mnt" || umount -l "$origin_mnt"; fi
    [ -z "$loop" ] || losetup -d "$loop" 2>/dev/null || true
    if [ -n "$work" ] && ! { [ -n "$mnt" ] && is_mounted "$mnt"; } && ! { [ -n "$origin_mnt" ] && mountpoint -q "$origin_mnt"; }; then
        rm -rf "$work"
    fi
    [ "$status" -eq 0 ] || log "failed (exit status $status)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ ! -x "$tc" ] || [ ! -x "$tc_fuse" ]; then
    [ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >&2
    cmake --build "$build" -j2 --target tiercache-tools >&2
fi

# On the real disk (not /tmp, which may be a tmpfs elsewhere): the nvme tier lives here.
work="$(mktemp -d /var/tmp/tiercache-ltm.XXXXXX)"
mnt="$work/mnt"
mkdir "$mnt" "$work/nvme"
if [ -n "$dataset" ]; then
    dataset="$(realpath "$dataset")"
    dataset_bytes="$(du -sb "$dataset" | cut -f1)"
    budget_mib="${BUDGET_MIB:-$((dataset_bytes / 2 / 1048576))}"
else
    budget_mib="${BUDGET_MIB:-512}"
fi
dram_mib="${DRAM_MIB:-$budget_mib}"
[ -n "$dataset" ] || dataset_bytes=$((dram_mib * ${DATASET_PCT:-200} / 100 * 1048576))
[ "$budget_mib" -ge 16 ] && [ "$dram_mib" -ge 16 ] || { log "BUDGET_MIB and DRAM_MIB must be at least 16 (got $budget_mib, $dram_mib)"; exit 1; }
budget=$((budget_mib * 1048576))
files=$((dataset_bytes / (110 * 1024)))
shards="${SHARDS:-0}"
[[ "$shards" =~ ^[01]$ ]] || { log "SHARDS must be 0 or 1 (got '$shards')"; exit 2; }
fill_origin() {  # dir: the dataset, copied or generated into it
    if [ "$shards" = 1 ] && [ -z "$dataset" ]; then
        local shard_bytes=$((dataset_bytes / 8 > 16 * 1048576 ? dataset_bytes / 8 : 16 * 1048576))
        log "generating WebDataset-style tar shards (~${DATASET_PCT:-200}% of the ${dram_mib} MiB dram tier) into the origin"
        python3 bench/make_shards.py "$1" --total-bytes "$dataset_bytes" --shard-bytes "$shard_bytes" --seed 7
        dataset_note="bench/make_shards.py --total-bytes $dataset_bytes --shard-bytes $shard_bytes: tar shards, each member a record, shuffled across all shards"
    elif [ -n "$dataset" ]; then
        log "copying $dataset into the origin"
        cp -a "$dataset/." "$1/"
        dataset_note="$dataset"
    else
        log "generating $files files (~${DATASET_PCT:-200}% of the ${dram_mib} MiB dram tier) into the origin"
        "$tc" gen "$1" --files "$files" --classes 100 --seed 7 --force >&2
        dataset_note="tiercache gen --files $files --classes 100 --seed 7"
    fi
}
if [ "$origin_mbps" -gt 0 ]; then
    # A filesystem of its own on a loop device: the throttle is set on that device only.
    log "making the origin: an ext4 image on a loop device, reads throttled to $origin_mbps MB/s"
    truncate -s $((dataset_bytes * 5 / 4 + 256 * 1048576)) "$work/origin.img"
    mkfs.ext4 -q -F -m 0 "$work/origin.img"
    loop="$(losetup --find --show --direct-io=on "$work/origin.img")"
    origin_mnt="$work/origin"
    mkdir "$origin_mnt"
    mount -o noatime "$loop" "$origin_mnt"
    fill_origin "$origin_mnt"
    mount -o remount,ro "$origin_mnt"
    origin="$origin_mnt"
    origin_desc="an ext4 image on a loop device (direct I/O), reads throttled to $origin_mbps MB/s"
else
    origin="$work/origin"
    mkdir "$origin"
    fill_origin "$origin"
    origin_desc="a folder of the local disk, not throttled (as fast as the nvme tier)"
fi
dataset_bytes="$(du -sb "$origin" | cut -f1)"
records=()  # bench read's: whole files, or the shards' records
if [ "$shards" = 1 ]; then
    "$tc" index "$origin" -o "$work/index.jsonl"
    records=(--records "$work/index.jsonl")
fi
origin_dev="$(findmnt -no MAJ:MIN -T "$origin" | tr -d ' ')"

for g in "${groups[@]}"; do mkdir -p "$mem_cg/$g" "$blk_cg/$g"; done
echo "$budget" > "$mem_cg/tc-bench-reader/memory.limit_in_bytes"
echo $((budget + ${SLACK_MIB:-128} * 1048576)) > "$mem_cg/tc-bench-daemon/memory.limit_in_bytes"
if [ "$origin_mbps" -gt 0 ]; then
    for g in "${groups[@]}"; do echo "$origin_dev $((origin_mbps * 1000 * 1000))" > "$blk_cg/$g/blkio.throttle.read_bps_device"; done
fi
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
run_in() {  # group command...: runs the command in the group's memory and blkio cgroups
    local group=$1
    shift
    sh -c 'echo $$ > "$0/cgroup.procs" && echo $$ > "$1/cgroup.procs" && shift && exec "$@"' \
        "$mem_cg/$group" "$blk_cg/$group" "$@"
}

# One line per (run, config, epoch): run config epoch seconds origin_bytes dram_hits dram_reads.
# Origin bytes are what the reader read from storage (native) or what the daemon read from the
# origin (its stats); the dram tier's hits and reads count the readers' reads only (-1: native).
results="$work/results.txt"
nvme_mib=$((dram_mib * 4))
run_native() {
    local run=$1 e line
    drop_caches
    for e in $(seq "$epochs"); do
        line="$(run_in tc-bench-reader "$tc" bench read "$origin" --readers "$readers" --seed "$((run * 100 + e))" --json "${records[@]}")"
        python3 -c 'import json, sys
j = json.loads(sys.argv[3])
print(sys.argv[1], "native", sys.argv[2], j["seconds"], j["storage_read_bytes"], -1, -1)' "$run" "$e" "$line" >> "$results"
    done
}
run_mount() {  # run config mode
    local run=$1 name=$2 mode=$3 e line before after row=$2
    local -a opts=(--dram "${dram_mib}MiB" "${fuse_opts[@]}") read_opts=() reader_in=()
    if [ "$mode" = off ]; then
        opts+=(--kernel-cache off)
    else
        [ "$mode" = default ] || opts+=(--kernel-cache "$mode")
        row="$name:$mode"
        reader_in=(run_in tc-bench-daemon)  # the page cache of the mount's files counts with the tier
    fi
    case "$name" in
        dram) opts+=(--policy noevict) ;;
        dram+nvme) opts+=(--policy noevict --nvme "$work/nvme:${nvme_mib}MiB") ;;
        lru+nvme) opts+=(--policy lru --nvme "$work/nvme:${nvme_mib}MiB") ;;
        plan) opts+=(--policy plan) read_opts=(--plan) ;;
        plan+nvme) opts+=(--policy plan --nvme "$work/nvme:${nvme_mib}MiB") read_opts=(--plan) ;;
    esac
    rm -rf "$work/nvme" && mkdir "$work/nvme"
    drop_caches
    run_in tc-bench-daemon "$tc_fuse" "$origin" "$mnt" "${opts[@]}" --log "$work/fuse.log"
    for _ in $(seq 300); do [ -e "$mnt/.tiercache/stats" ] && break; sleep 0.1; done
    [ -e "$mnt/.tiercache/stats" ] || { log "the mount did not come up (see $work/fuse.log)"; exit 1; }
    [ "$mode" != default ] || log "$row: $(grep -o 'kernel cache auto: .*' "$work/fuse.log" | tail -1)"
    for e in $(seq "$epochs"); do
        before="$(cat "$mnt/.tiercache/stats")"
        line="$("${reader_in[@]}" "$tc" bench read "$mnt" --readers "$readers" --seed "$((run * 100 + e))" --json "${records[@]}" "${read_opts[@]}")"
        after="$(cat "$mnt/.tiercache/stats")"
        python3 -c 'import json, sys
run, name, e, line, before, after = sys.argv[1:4] + [json.loads(a) for a in sys.argv[4:]]
d = lambda f: f(after) - f(before)
dram = lambda s: s["tiers"][s["tier_order"][0]]
print(run, name, e, line["seconds"], d(lambda s: s["origin"]["bytes_read"]), d(lambda s: dram(s)["hits"]),
      d(lambda s: dram(s)["hits"] + dram(s)["misses"]))
# Where the epoch went, for the log: what reached the daemon and where it was found.
tier = lambda t, k: d(lambda s: s["tiers"][t][k])
tiers = " ".join("%s hits %d misses %d read %.0f MiB" % (t, tier(t, "hits"), tier(t, "misses"), tier(t, "bytes_read") / 2**20)
                 for t in after["tier_order"])
prefetch = " ".join("%s %d" % (k, d(lambda s: s["prefetch"][k])) for k, v in after["prefetch"].items() if isinstance(v, int))
print("larger_than_memory: %s epoch %s: %.2f s, fuse reads %d; %s; prefetch %s" % (name, e, line["seconds"],
      d(lambda s: s["fuse"]["requests"].get("read", 0)), tiers, prefetch), file=sys.stderr)' \
            "$run" "$row" "$e" "$line" "$before" "$after" >> "$results"
    done
    # The nvme write-through's counters, for the log (what the writer had to skip).
    python3 -c 'import json, sys
w = json.loads(sys.argv[2]).get("nvme_writes")
if w: print("larger_than_memory:", sys.argv[1], "nvme writes:", " ".join(f"{k} {v}" for k, v in w.items()), file=sys.stderr)' \
        "$row" "$(cat "$mnt/.tiercache/stats")"
    fusermount3 -u "$mnt"
    for _ in $(seq 100); do is_mounted "$mnt" || break; sleep 0.1; done
}

for run in $(seq "$runs"); do
    for c in $configs; do
        [ "$c" != native ] || log "run $run/$runs: $c"
        if [ "$c" = native ]; then
            run_native "$run"
        else
            for m in $mount_modes; do
                log "run $run/$runs: $c, mount options: $m"
                run_mount "$run" "$c" "$m"
            done
        fi
    done
done

mkdir -p bench/results
name=larger_than_memory title="Larger than memory" time_target="<= 0.5x"
[ "$shards" = 0 ] || name=webdataset title="WebDataset shards, a shuffled record plan" time_target="<= 0.3x"
report="bench/results/$name-$(date -u +%Y%m%d-%H%M%S).md"
python3 bench/larger_than_memory_report.py "$results" --workload "$name" --title "$title" --time-target "$time_target" --dataset-bytes "$dataset_bytes" --budget-mib "$dram_mib" \
    --nvme-mib "$nvme_mib" --readers "$readers" --runs "$runs" --origin "$origin_desc" --note "$dataset_note; memory cgroups: native $budget_mib MiB, the daemon (and in mode default its readers) $((budget_mib + ${SLACK_MIB:-128})) MiB" \
    --host "$(date -u +%Y-%m-%d), $(nproc) CPUs, kernel $(uname -r)" ${RESULT_JSON:+--json "$RESULT_JSON"} > "$report"
cp "$results" "${report%.md}.txt"  # each run's lines, as the report read them
cat "$report"
log "written to $report (each run's figures: ${report%.md}.txt)"
