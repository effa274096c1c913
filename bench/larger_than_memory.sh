#!/usr/bin/env bash
# Larger than memory: shuffled epochs over a dataset twice the DRAM budget (DESIGN.md section 7).
# Side by side in one run, each starting cold (page cache dropped), 4 readers, whole files:
#   native     the origin read directly, the reader in a memory cgroup limited to the budget
#              (the kernel page cache is then an LRU cache of that size)
#   dram       tiercache-fuse --dram BUDGET (noevict), kernel cache off
#   dram+nvme  the same plus --nvme on the local disk (noevict: what dram cannot hold is on nvme)
#   lru+nvme   the same with --policy lru
#   plan       --dram BUDGET, each epoch's order written to the plan file first (bench read --plan):
#              the mount prefetches ahead of the readers and places by next use
#   plan+nvme  the same plus --nvme
# The daemon runs in a memory cgroup of BUDGET + 384 MiB (its dram tier lives in /dev/shm pages
# charged to it; the rest covers the catalog and page cache of nvme slabs), so no side gets
# more memory than the budget beyond bookkeeping.
#
#   bench/larger_than_memory.sh                 # BUDGET=1GiB, a generated 2 GiB dataset
#   BUDGET_MIB=512 EPOCHS=3 bench/larger_than_memory.sh [DATASET_DIR]
#
# Writes a Markdown table to stdout and bench/results/larger_than_memory-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

budget_mib="${BUDGET_MIB:-1024}"
epochs="${EPOCHS:-3}"
readers="${READERS:-4}"
dataset="${1:-}"
tc=build/cache/tiercache
tc_fuse=build/fuse/tiercache-fuse
cg=/sys/fs/cgroup/memory

[ -d "$cg" ] || { echo "larger_than_memory: no cgroup v1 memory controller at $cg" >&2; exit 1; }
[ -w /proc/sys/vm/drop_caches ] || { echo "larger_than_memory: needs root (drop_caches, cgroups)" >&2; exit 1; }

# shellcheck source=scripts/lib/mount.sh
source scripts/lib/mount.sh
work=""
mnt=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [ -z "$mnt" ] || unmount_safely "$mnt" larger_than_memory
    for g in tc-bench-reader tc-bench-daemon; do
        [ -d "$cg/$g" ] && { cat "$cg/$g/cgroup.procs" 2>/dev/null | while read -r p; do echo "$p" > "$cg/cgroup.procs" 2>/dev/null || true; done; rmdir "$cg/$g" 2>/dev/null || true; }
    done
    if [ -n "$work" ] && ! { [ -n "$mnt" ] && is_mounted "$mnt"; }; then rm -rf "$work"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log() { printf 'larger_than_memory: %s\n' "$*" >&2; }

if [ ! -x "$tc" ] || [ ! -x "$tc_fuse" ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2
    cmake --build build -j2 --target tiercache-cli tiercache-fuse >&2
fi

# On the real disk (not /tmp, which may be a tmpfs elsewhere): origin and nvme both live here.
work="$(mktemp -d /var/tmp/tiercache-ltm.XXXXXX)"
mnt="$work/mnt"
mkdir "$mnt"
budget=$((budget_mib * 1024 * 1024))
if [ -n "$dataset" ]; then
    origin="$(realpath "$dataset")"
else
    origin="$work/origin"
    files=$((budget * 2 / (110 * 1024)))
    log "generating $files files (~2x the ${budget_mib} MiB budget) into $origin"
    "$tc" gen "$origin" --files "$files" --classes 100 --seed 7 >&2
fi

make_cgroup() {  # name limit_bytes
    mkdir -p "$cg/$1"
    echo "$2" > "$cg/$1/memory.limit_in_bytes"
}
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
run_in() {  # cgroup command...: runs the command with its pid in the cgroup
    local group=$1
    shift
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg/$group" "$@"
}

results="$work/results.txt"  # lines: config epoch seconds origin_bytes
make_cgroup tc-bench-reader "$budget"
make_cgroup tc-bench-daemon $((budget + 384 * 1024 * 1024))

log "native: the origin read in a ${budget_mib} MiB memory cgroup"
drop_caches
for e in $(seq "$epochs"); do
    line="$(run_in tc-bench-reader "$tc" bench read "$origin" --readers "$readers" --seed "$e" --json)"
    python3 -c 'import json,sys; j=json.loads(sys.argv[2]); print("native", sys.argv[1], j["seconds"], j["storage_read_bytes"])' "$e" "$line" >> "$results"
done

run_mount() {  # name, then tiercache-fuse options; a name starting "plan" writes the plan
    local name=$1
    shift
    local read_opts=()
    case "$name" in plan*) read_opts=(--plan) ;; esac
    rm -rf "$work/nvme" && mkdir "$work/nvme"
    drop_caches
    run_in tc-bench-daemon "$tc_fuse" "$origin" "$mnt" --kernel-cache off "$@"
    for _ in $(seq 300); do [ -e "$mnt/.tiercache/stats" ] && break; sleep 0.1; done
    local before after line
    for e in $(seq "$epochs"); do
        before="$(cat "$mnt/.tiercache/stats")"
        line="$("$tc" bench read "$mnt" --readers "$readers" --seed "$e" --json "${read_opts[@]}")"
        after="$(cat "$mnt/.tiercache/stats")"
        python3 - "$name" "$e" "$line" "$before" "$after" >> "$results" <<'EOF'
import json, sys
name, e, line, before, after = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), json.loads(sys.argv[5])
print(name, e, line["seconds"], after["origin"]["bytes_read"] - before["origin"]["bytes_read"])
EOF
    done
    cat "$mnt/.tiercache/stats" > "$work/stats-$name.json"
    fusermount3 -u "$mnt"
    sleep 0.5
}

log "tiercache: dram ${budget_mib} MiB, noevict"
run_mount dram --dram "${budget_mib}MiB" --policy noevict
log "tiercache: dram ${budget_mib} MiB + nvme, noevict"
run_mount dram+nvme --dram "${budget_mib}MiB" --nvme "$work/nvme:$((budget_mib * 4))MiB" --policy noevict
log "tiercache: dram ${budget_mib} MiB + nvme, lru"
run_mount lru+nvme --dram "${budget_mib}MiB" --nvme "$work/nvme:$((budget_mib * 4))MiB" --policy lru
log "tiercache: dram ${budget_mib} MiB, plan written each epoch"
run_mount plan --dram "${budget_mib}MiB" --policy plan
log "tiercache: dram ${budget_mib} MiB + nvme, plan written each epoch"
run_mount plan+nvme --dram "${budget_mib}MiB" --nvme "$work/nvme:$((budget_mib * 4))MiB" --policy plan

mkdir -p bench/results
report="bench/results/larger_than_memory-$(date -u +%Y%m%d-%H%M%S).md"
dataset_bytes="$(du -sb "$origin" | cut -f1)"
python3 - "$results" "$dataset_bytes" "$budget_mib" "$epochs" "$readers" "$(date -u +%Y-%m-%d)" "$(nproc) CPUs, kernel $(uname -r)" > "$report" <<'EOF'
import sys, collections
path, dataset, budget, epochs, readers, date, host = sys.argv[1:]
dataset, epochs = int(dataset), int(epochs)
rows = collections.OrderedDict()
for line in open(path):
    name, e, seconds, origin = line.split()
    rows.setdefault(name, []).append((float(seconds), int(origin)))
native = rows["native"]
print(f"## Larger than memory: {dataset / 2**30:.2f} GiB dataset, {budget} MiB DRAM budget, {epochs} shuffled epochs, {readers} readers")
print()
print(f"{date}, {host}; each configuration starts cold; origin bytes: read from storage by the reader (native) or by the daemon (tiercache)")
print()
head = " | ".join(f"epoch {i + 1} s" for i in range(epochs))
print(f"| configuration | {head} | origin bytes / dataset, per epoch | epoch {epochs} time vs native |")
print("|---|" + "---:|" * epochs + "---|---:|")
for name, runs in rows.items():
    times = " | ".join(f"{s:.2f}" for s, _ in runs)
    origin = ", ".join(f"{o / dataset:.2f}" for _, o in runs)
    ratio = runs[-1][0] / native[-1][0]
    print(f"| {name} | {times} | {origin} | {ratio:.2f}x |")
EOF
cat "$report"
log "written to $report"
