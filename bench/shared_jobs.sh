#!/usr/bin/env bash
# Co-located training jobs: one shared cache against a private cache each (DESIGN.md section 7).
# JOBS jobs (examples/shared_jobs/train_job.cpp: Cache::attach, an EpochLoader over its own
# EpochPlan seed, STEP_MS of "training" per batch) read EPOCHS epochs of the same dataset,
# all started at once, in two configurations side by side:
#   shared   one owner (tiercache serve --dram DRAM) and JOBS jobs attached to it
#   private  JOBS owners (one name each, --dram DRAM each: each holds the whole dataset) and
#            one job attached to each
# The jobs use the seeds 1..JOBS in both. The origin is made slow as in pytorch_epoch.sh:
# every process of the bench (owners, jobs, stats) runs in a blkio cgroup throttled to
# ORIGIN_MBPS, and the origin's files are evicted from the page cache (fadvise DONTNEED)
# before each configuration starts, so it starts cold.
# With PRIVATE_ORIGINS=one (the default) the private owners read the same directory, so the
# host's page cache can hand a file one owner has read to the others without reading the
# disk again: the owners' origin bytes are 4x, the disk's are not. With PRIVATE_ORIGINS=copies
# each private owner reads its own copy of the dataset (made once, before the runs): the disk
# is then read once per cache, as each would fetch from a remote store.
# Measured per configuration (medians over RUNS runs):
#   origin bytes    the sum of every owner's origin.bytes_read (tiercache stats --attach NAME
#                   --json, taken after the jobs end, before the owners stop); and the bytes
#                   the cgroup read from the disk (blkio.throttle.io_service_bytes)
#   memory          the sum of the owners' dram used_bytes; the owners' VmRSS (which counts
#                   RssShmem: the segment pages the owner touched) and RssShmem, from
#                   /proc/PID/status, taken at the same time
#   time            per job, seconds of its epoch 1 (cold) and of its last epoch (warm), the
#                   median over the jobs; and the wall time from starting the jobs to the last
#                   one's end
#
#   bench/shared_jobs.sh                          # FILES=3000 (~320 MiB) generated into /var/tmp
#   RUNS=1 PRIVATE_ORIGINS=copies BUILD_DIR=build-me bench/shared_jobs.sh [DATASET_DIR]
#
# Environment: FILES (3000), CLASSES (100), RUNS (3), JOBS (4), EPOCHS (3), STEP_MS (1),
# ORIGIN_MBPS (100), DRAM (1GiB: holds the dataset), PRIVATE_ORIGINS (one or copies),
# BUILD_DIR (build), RESULT_JSON (bench/run's summary rows). Needs root (cgroups) and python3. Prints a Markdown table and writes it
# to bench/results/shared_jobs-<date>.md. Owners, jobs, the cgroup, leftover segments and the
# temporary files are removed on every way out, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/.."

files="${FILES:-3000}"
classes="${CLASSES:-100}"
runs="${RUNS:-3}"
jobs_n="${JOBS:-4}"
epochs="${EPOCHS:-3}"
step_ms="${STEP_MS:-1}"
origin_mbps="${ORIGIN_MBPS:-100}"
dram="${DRAM:-1GiB}"
private_origins="${PRIVATE_ORIGINS:-one}"
build="${BUILD_DIR:-build}"
dataset="${1:-}"
tc="$build/cache/tiercache"
job_bin="$build/examples/tiercache-example-shared-job"
python="$(command -v python3 || true)"
cg=/sys/fs/cgroup/blkio/tc-bench-shared-$$
shm=/dev/shm

log() { printf 'shared_jobs: %s\n' "$*" >&2; }
[ -d "$(dirname "$cg")" ] || { log "no cgroup v1 blkio controller at $(dirname "$cg")"; exit 1; }
[ "$(id -u)" -eq 0 ] || { log "needs root (cgroups)"; exit 1; }
[ -n "$python" ] || { log "needs python3"; exit 1; }
case "$private_origins" in one | copies) ;; *) log "PRIVATE_ORIGINS must be one or copies"; exit 1 ;; esac
if [ "$jobs_n" -lt 1 ] || [ "$epochs" -lt 1 ] || [ "$runs" -lt 1 ]; then log "JOBS, EPOCHS and RUNS must be at least 1"; exit 1; fi

work=""
pids=()   # owners and jobs still running, ended by cleanup
names=()  # share names used, whose files in $shm cleanup removes if an owner left them
forget_pid() {
    local p kept=()
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
    pids=("${kept[@]}")
}
cleanup() {
    local status=$?
    # Ignored, not reset: a second Ctrl-C (or timeout's signal to the group after the one to
    # this shell) must not cut the cleanup short.
    trap - EXIT
    trap '' INT TERM
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    local n
    for n in "${names[@]}"; do rm -f "$shm/tiercache-$n.seg" "$shm/tiercache-$n.sock" "$shm/tiercache-$n.lock"; done
    if [ -d "$cg" ]; then
        local parent
        parent="$(dirname "$cg")"
        echo $$ > "$parent/cgroup.procs" 2>/dev/null || true
        for _ in 1 2 3 4 5; do
            while read -r p; do echo "$p" > "$parent/cgroup.procs" 2>/dev/null || true; done < "$cg/cgroup.procs"
            rmdir "$cg" 2>/dev/null && break
            sleep 0.2
        done
        [ ! -d "$cg" ] || log "could not remove the cgroup $cg"
    fi
    [ -z "$work" ] || rm -rf "$work"
    [ "$status" -eq 0 ] || log "failed (exit status $status)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ ! -x "$tc" ] || [ ! -x "$job_bin" ]; then
    [ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2
    cmake --build "$build" -j2 --target tiercache-cli tiercache-example-shared-job >&2
fi

# On the real disk (not /tmp, which may be a tmpfs elsewhere): the throttle applies to it.
work="$(mktemp -d /var/tmp/tiercache-shared.XXXXXX)"
if [ -n "$dataset" ]; then
    origin="$(realpath "$dataset")"
    dataset_note="$origin"
else
    origin="$work/origin"
    log "generating $files files into $origin"
    "$tc" gen "$origin" --files "$files" --classes "$classes" --seed 5 >&2
    dataset_note="tiercache gen --files $files --classes $classes --seed 5"
fi
# The origin of each private owner; the shared owner reads ${origins[0]}.
origins=()
for i in $(seq "$jobs_n"); do
    if [ "$private_origins" = copies ] && [ "$i" -gt 1 ]; then
        log "copying the dataset for private owner $i"
        cp -a "$origin" "$work/origin-copy-$i"
        origins+=("$work/origin-copy-$i")
    else
        origins+=("$origin")
    fi
done
mapfile -t distinct_origins < <(printf '%s\n' "${origins[@]}" | sort -u)
dev="$(findmnt -no MAJ:MIN -T "$origin" | tr -d ' ')"
for o in "${origins[@]}"; do
    [ "$(findmnt -no MAJ:MIN -T "$o" | tr -d ' ')" = "$dev" ] || { log "$o is not on the device of $origin"; exit 1; }
done
mkdir "$cg"
echo "$dev $((origin_mbps * 1000 * 1000))" > "$cg/blkio.throttle.read_bps_device"
# From here on every process of the bench, this shell included, is in the cgroup.
echo $$ > "$cg/cgroup.procs"

# Drops the page cache of every file under the given directories (after a sync: DONTNEED drops
# clean pages only).
evict() {
    "$python" - "$@" <<'EOF'
import os, sys
os.sync()
for top in sys.argv[1:]:
    for parent, _, names in os.walk(top):
        for name in names:
            fd = os.open(os.path.join(parent, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
EOF
}
disk_read_bytes() { awk '$2 == "Read" { n += $3 } END { printf "%.0f\n", n }' "$cg/blkio.throttle.io_service_bytes"; }

# Starts an owner of name $1 over origin $2, logging into $3; waits until it serves.
start_owner() {
    names+=("$1")
    "$tc" serve "$2" --name "$1" --dram "$dram" --log "$3.log" > "$3.out" 2>&1 &
    local pid=$!
    pids+=("$pid")
    echo "$pid" > "$3.pid"
    for _ in $(seq 600); do
        grep -q '^serving cache' "$3.out" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    log "owner '$1' did not come up:"
    cat "$3.out" "$3.log" >&2 2>/dev/null || true
    exit 1
}

# Stops the owners whose pid files are given (SIGTERM, as tiercache serve expects).
stop_owners() {
    local f pid status
    for f in "$@"; do kill -TERM "$(cat "$f")"; done
    for f in "$@"; do
        pid="$(cat "$f")"
        status=0
        wait "$pid" || status=$?
        [ "$status" -eq 0 ] || { log "owner pid $pid ($f) exited with status $status"; exit 1; }
        forget_pid "$pid"
    done
}

# One configuration, run $1, named $2 (shared or private): owners up, origin evicted, jobs
# started at once, then the owners' stats and memory, then the owners stopped.
run_config() {
    local run="$1" config="$2" dir="$work/run$1-$2" i name
    mkdir "$dir"
    local owner_names=() owner_files=()
    if [ "$config" = shared ]; then
        owner_names=("tc-bench-shared-$$-r$run")
        start_owner "${owner_names[0]}" "${origins[0]}" "$dir/owner-1"
        owner_files=("$dir/owner-1")
    else
        for i in $(seq "$jobs_n"); do
            owner_names+=("tc-bench-shared-$$-r$run-p$i")
            start_owner "${owner_names[$((i - 1))]}" "${origins[$((i - 1))]}" "$dir/owner-$i"
            owner_files+=("$dir/owner-$i")
        done
    fi
    evict "${distinct_origins[@]}"
    local disk_before job_pids=() start end
    disk_before="$(disk_read_bytes)"
    start="$EPOCHREALTIME"
    for i in $(seq "$jobs_n"); do
        if [ "$config" = shared ]; then name="${owner_names[0]}"; else name="${owner_names[$((i - 1))]}"; fi
        "$job_bin" "$name" "$i" "$epochs" "$step_ms" > "$dir/job-$i.out" 2> "$dir/job-$i.err" &
        job_pids+=("$!")
        pids+=("$!")
    done
    local failed=0 status
    for i in $(seq "$jobs_n"); do
        status=0
        wait "${job_pids[$((i - 1))]}" || status=$?
        forget_pid "${job_pids[$((i - 1))]}"
        if [ "$status" -ne 0 ]; then
            log "$config run $run: job $i (seed $i) exited with status $status:"
            cat "$dir/job-$i.out" "$dir/job-$i.err" >&2
            failed=1
        fi
    done
    end="$EPOCHREALTIME"
    [ "$failed" -eq 0 ] || exit 1
    echo $(($(disk_read_bytes) - disk_before)) > "$dir/disk_bytes"
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }' > "$dir/wall_s"
    for i in "${!owner_names[@]}"; do
        "$tc" stats --attach "${owner_names[$i]}" --json > "$dir/owner-$((i + 1)).stats.json"
        grep -E '^(VmRSS|RssAnon|RssShmem|VmHWM):' "/proc/$(cat "${owner_files[$i]}.pid")/status" > "$dir/owner-$((i + 1)).status"
    done
    stop_owners "${owner_files[@]/%/.pid}"
    if grep -hE 'tiercache (warn|error)' "${owner_files[@]/%/.log}" "$dir"/job-*.err >&2; then
        log "$config run $run: the warnings above were logged"
    fi
}

for run in $(seq "$runs"); do
    for config in shared private; do
        log "run $run/$runs: $config"
        run_config "$run" "$config"
    done
done

mkdir -p bench/results
report="bench/results/shared_jobs-$(date -u +%Y%m%d-%H%M%S).md"
dataset_bytes="$(du -sb "$origin" | cut -f1)"
"$python" - "$work" "$runs" "$jobs_n" "$epochs" "$dataset_bytes" "$dataset_note" \
    "$(date -u +%Y-%m-%d), $(nproc) CPUs, kernel $(uname -r)" "$origin_mbps" "$dram" "$step_ms" "$private_origins" "${RESULT_JSON:-}" > "$report" <<'EOF'
import glob, json, os, re, statistics, sys
work, runs, jobs, epochs, dataset, note, host, mbps, dram, step_ms, private_origins, result_json = sys.argv[1:]
runs, jobs, epochs, dataset = int(runs), int(jobs), int(epochs), int(dataset)
line_re = re.compile(r"^job seed (\d+) epoch (\d+): (\d+) samples, .* in ([0-9.]+) s, stalled ([0-9.]+)% of the time$")
problems = []

def measure(run, config):
    d = os.path.join(work, f"run{run}-{config}")
    m = {"origin": 0, "dram": 0, "rss": 0, "shmem": 0, "reads": 0, "errors": 0}
    samples = None
    for path in sorted(glob.glob(os.path.join(d, "owner-*.stats.json"))):
        s = json.load(open(path))
        samples = s["samples"]
        m["origin"] += s["origin"]["bytes_read"]
        m["errors"] += s["origin"]["errors"]
        m["dram"] += s["tiers"][s["tier_order"][0]]["used_bytes"]
        status = dict(re.findall(r"^(\w+):\s+(\d+) kB$", open(path.replace(".stats.json", ".status")).read(), re.M))
        m["rss"] += int(status["VmRSS"]) * 1024
        m["shmem"] += int(status["RssShmem"]) * 1024
    cold, warm = [], []
    for j in range(1, jobs + 1):
        got = {}
        for line in open(os.path.join(d, f"job-{j}.out")):
            r = line_re.match(line.strip())
            if r:
                got[int(r.group(2))] = (int(r.group(3)), float(r.group(4)))
        if sorted(got) != list(range(epochs)):
            problems.append(f"{config} run {run} job {j}: epochs {sorted(got)} reported, {epochs} expected")
            continue
        for e, (n, _) in got.items():
            if n != samples:
                problems.append(f"{config} run {run} job {j} epoch {e + 1}: {n} samples read, the catalog has {samples}")
        cold.append(got[0][1])
        warm.append(got[epochs - 1][1])
    if m["errors"]:
        problems.append(f"{config} run {run}: {m['errors']} origin errors")
    m["cold"] = statistics.median(cold) if cold else float("nan")
    m["warm"] = statistics.median(warm) if warm else float("nan")
    m["wall"] = float(open(os.path.join(d, "wall_s")).read())
    m["disk"] = int(open(os.path.join(d, "disk_bytes")).read())
    m["samples"] = samples
    return m

data = {c: [measure(r, c) for r in range(1, runs + 1)] for c in ("shared", "private")}
med = lambda c, k: statistics.median(m[k] for m in data[c])
mib = lambda b: f"{b / 2**20:,.0f} MiB"
rows = [
    ("origin bytes read (owners' stats)", "origin", lambda b: f"{mib(b)} ({b / dataset:.2f}x dataset)"),
    ("disk bytes read (blkio, whole cgroup)", "disk", lambda b: f"{mib(b)} ({b / dataset:.2f}x dataset)"),
    ("dram used (owners' used_bytes)", "dram", mib),
    ("owners' RSS (VmRSS, shmem included)", "rss", mib),
    ("of which shared memory (RssShmem)", "shmem", mib),
    (f"epoch 1 (cold) s, median of {jobs} jobs", "cold", lambda s: f"{s:.2f}"),
    (f"epoch {epochs} (warm) s, median of {jobs} jobs", "warm", lambda s: f"{s:.2f}"),
    (f"wall time, {jobs} jobs, s", "wall", lambda s: f"{s:.2f}"),
]
samples = data["shared"][0]["samples"]
origin_note = ("each private owner reads its own copy of the dataset (PRIVATE_ORIGINS=copies)"
               if private_origins == "copies" else
               "the private owners read the same directory, so a file one of them read may reach the others "
               "from the page cache (PRIVATE_ORIGINS=one)")
print(f"## {jobs} jobs: one shared cache vs {jobs} private caches: {samples} files, {dataset / 2**20:.0f} MiB ({note})")
print()
print(f"{host}. Origin: the local disk throttled to {mbps} MB/s for every process of the bench (blkio cgroup), "
      f"its files evicted from the page cache before each configuration starts; {origin_note}. "
      f"Shared: one `tiercache serve --dram {dram}`, {jobs} jobs attached. Private: {jobs} owners of `--dram {dram}`, "
      f"one job each. Jobs: `tiercache-example-shared-job NAME SEED {epochs} {step_ms}` with seeds 1..{jobs}, "
      f"all started at once (EpochLoader: batch 64, depth 8, 8 threads). Medians of {runs} runs; "
      f"each configuration starts cold (fresh owners). Memory is taken after the jobs end, before the owners stop.")
print()
print(f"| per configuration | shared: 1 owner, {jobs} jobs | private: {jobs} owners, 1 job each | shared / private |")
print("|---|---:|---:|---:|")
for label, key, fmt in rows:
    s, p = med("shared", key), med("private", key)
    ratio = f"{s / p:.2f}x" if p else "-"
    print(f"| {label} | {fmt(s)} | {fmt(p)} | {ratio} |")
print()
per_run = "; ".join(f"{c}: " + ", ".join(f"{m['cold']:.2f}/{m['warm']:.2f}/{m['wall']:.2f}" for m in data[c]) for c in data)
print(f"Per run (epoch 1 s / epoch {epochs} s / wall s): {per_run}.")
for p in problems:
    print(f"\n**Problem:** {p}")
if result_json:
    # The target: every sample read from the origin once, whatever the number of jobs.
    out = []
    for label, key, unit, scale, target in (
            ("origin bytes / dataset", "origin", "dataset bytes", dataset, "1x the dataset"),
            ("dram held", "dram", "MiB", 2**20, ""), ("owners' RSS", "rss", "MiB", 2**20, ""),
            ("epoch 1 (cold) time, median job", "cold", "s", 1, ""),
            (f"epoch {epochs} (warm) time, median job", "warm", "s", 1, ""),
            (f"all {jobs} jobs done", "wall", "s", 1, "")):
        s, p = med("shared", key) / scale, med("private", key) / scale
        out.append({"measure": f"{label}: one shared cache vs {jobs} private", "ours": s, "baseline": p, "unit": unit,
                    "ratio": s / p if p else None, "target": target,
                    "met": (s <= 1.02 and not problems) if target else None})
    json.dump({"workload": "shared_jobs", "title": f"{jobs} co-located jobs",
               "setup": f"{jobs} jobs x {epochs} epochs over {samples} files ({dataset / 2**20:.0f} MiB), origin "
                        f"throttled to {mbps} MB/s, private owners {'on copies' if private_origins == 'copies' else 'on one folder'}; "
                        f"medians of {runs}" + (f"; PROBLEMS: {'; '.join(problems)}" if problems else ""),
               "rows": out}, open(result_json, "w"), indent=1)
EOF
cat "$report"
log "written to $report"
