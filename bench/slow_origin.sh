#!/usr/bin/env bash
# Slow origin (issue 6, workload d): epochs over an origin that takes LATENCY_MS per read, our
# EpochLoader over a Cache (bench/slow_origin.cpp) against a PyTorch DataLoader with WORKERS
# workers (bench/slow_origin.py), side by side in the same invocation (DESIGN.md section 7):
# the same files, the same injected latency (a sleep before each read of a file), the same
# batch size, the same compute (a sleep per batch, the batch held), EPOCHS shuffled epochs.
# Ours: epoch 1 reads the origin (cold), later epochs the DRAM tier (sized to hold the
# dataset). PyTorch's Dataset has no cache: every epoch pays the latency on every file.
#
#   bench/slow_origin.sh               # generates FILES files (default 2000) in a temp dir
#   bench/slow_origin.sh DATASET_DIR   # or reads an existing dataset (never written)
#
# Environment: FILES (2000), RUNS (3), EPOCHS (3), LATENCY_MS (2), BATCH (32), COMPUTE_MS (16),
# WORKERS (4, PyTorch's), THREADS (4) and DEPTH (4) and PREFETCH_WINDOW (0) (the EpochLoader's),
# DRAM (auto: the dataset + 1/8 + 64 MiB), BUILD_DIR (build), TIERCACHE_BENCH_DIR (parent of
# the temp dir, default /tmp), RESULT_JSON (if set, the summary rows are written there),
# TORCH_PYTHON (/usr/bin/python3: the interpreter with torch and torchvision).
#
# The default COMPUTE_MS is the break-even of WORKERS workers at LATENCY_MS a file:
# BATCH * LATENCY_MS / WORKERS = 32 * 2 / 4 = 16 ms. At that compute, 4 workers doing nothing
# but waiting on the origin could just keep up, so PyTorch's stall is its overhead on top of
# the latency; ours, once warm, reads no origin at all.
#
# Each run starts both sides fresh (a new cache, a new DataLoader); runs alternate which side
# goes first, with seed = run number. Prints a Markdown table of medians over RUNS runs and
# writes it to bench/results/slow_origin-<date>.md. TORCH_PYTHON runs the PyTorch side;
# without torch there, that side is skipped, the report says so and its figures are null. Temp files are removed on
# every exit path, Ctrl-C included.
set -euo pipefail

cd "$(dirname "$0")/.."

files="${FILES:-2000}"
runs="${RUNS:-3}"
epochs="${EPOCHS:-3}"
latency_ms="${LATENCY_MS:-2}"
batch="${BATCH:-32}"
compute_ms="${COMPUTE_MS:-16}"
workers="${WORKERS:-4}"
threads="${THREADS:-4}"
depth="${DEPTH:-4}"
prefetch_window="${PREFETCH_WINDOW:-0}"
dram="${DRAM:-auto}"
build="${BUILD_DIR:-build}"
dataset="${1:-}"

tc="$build/cache/tiercache"
bench_bin="$build/bench/tiercache-bench-slow-origin"
torch_python="${TORCH_PYTHON:-/usr/bin/python3}"

work=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # A DATASET_DIR given to us is not under $work.
    [ -z "$work" ] || rm -rf "$work"
    [ "$status" -eq 0 ] || echo "slow_origin: failed (exit status $status)" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'slow_origin: %s\n' "$*" >&2; }

if [ ! -x "$tc" ] || [ ! -x "$bench_bin" ]; then
    log "building $tc and $bench_bin"
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >&2
    cmake --build "$build" -j2 --target tiercache-cli tiercache-bench >&2
fi
# The PyTorch side's loop (examples/pytorch/train_imagefolder.py) imports the Python package
# (tiercache.torch) from the build tree.
if ! compgen -G "$build/python/tiercache/_tiercache*.so" > /dev/null; then
    log "building the Python package in $build"
    cmake --build "$build" -j2 --target tiercache-python >&2
fi
PYTHONPATH="$(realpath "$build")/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH

parent="${TIERCACHE_BENCH_DIR:-/tmp}"
mkdir -p "$parent"
work="$(mktemp -d "$(realpath "$parent")/tiercache-slow-origin.XXXXXX")"

if [ -n "$dataset" ]; then
    [ -d "$dataset" ] || { log "dataset '$dataset' is not a directory"; exit 1; }
    origin="$(realpath "$dataset")"
    dataset_note="existing dataset $origin"
else
    origin="$work/origin"
    log "generating $files files into $origin"
    "$tc" gen "$origin" --files "$files" --classes 100 --seed 1 >&2
    dataset_note="tiercache gen --files $files --classes 100 --seed 1"
fi

if "$torch_python" -c 'import torch, torchvision' 2>/dev/null; then
    have_torch=1
    torch_note="torch $("$torch_python" -c 'import torch; print(torch.__version__)')"
else
    have_torch=0
    torch_note="skipped: $torch_python lacks torch/torchvision (scripts/install-deps --torch)"
    log "PyTorch side $torch_note"
fi

# Both sides read the files' bytes from the page cache, so the injected latency is the
# origin's only cost: one pass first puts the whole dataset there.
log "reading the dataset once (page cache)"
"$tc" bench read "$origin" --readers 4 > /dev/null

ours_args=(--dataset "$origin" --latency-ms "$latency_ms" --epochs "$epochs" --batch "$batch" --compute-ms "$compute_ms"
           --threads "$threads" --depth "$depth" --prefetch-window "$prefetch_window" --dram "$dram")
torch_args=("$origin" --latency-ms "$latency_ms" --epochs "$epochs" --batch "$batch" --compute-ms "$compute_ms"
            --workers "$workers")
for run in $(seq "$runs"); do
    # Alternate which side goes first, so drift over time does not favour one side.
    if [ $((run % 2)) -eq 1 ]; then sides="ours pytorch"; else sides="pytorch ours"; fi
    for side in $sides; do
        if [ "$side" = ours ]; then
            log "run $run/$runs: ours (EpochLoader, threads $threads, depth $depth)"
            "$bench_bin" "${ours_args[@]}" --seed "$run" --json "$work/ours-$run.json" >&2
        elif [ "$have_torch" -eq 1 ]; then
            log "run $run/$runs: PyTorch (DataLoader, $workers workers)"
            "$torch_python" bench/slow_origin.py "${torch_args[@]}" --seed "$run" --json "$work/pytorch-$run.json" >&2
        fi
    done
done

mkdir -p bench/results
report="bench/results/slow_origin-$(date -u +%Y%m%d-%H%M%S).md"
setup="$(date -u +%Y-%m-%d), $(hostname -s), $(nproc) CPUs, kernel $(uname -r)"
python3 - "$work" "$runs" "$setup" "$dataset_note" "$torch_note" "${RESULT_JSON:-}" > "$report" <<'EOF'
import glob, json, statistics, sys

work, runs, host, dataset_note, torch_note, result_json = sys.argv[1:]
load = lambda side: [json.load(open(p)) for p in sorted(glob.glob(f"{work}/{side}-*.json"))]
ours, torch = load("ours"), load("pytorch")
o = ours[0]
if torch and any(t["samples"] != o["samples"] for t in torch):
    sys.exit(f"slow_origin: the two sides saw different datasets ({o['samples']} against {torch[0]['samples']} files)")
epochs = [e["epoch"] for e in o["epochs"]]
last = epochs[-1]

def med(results, epoch, key):
    if not results:
        return None
    return statistics.median(r["epochs"][epoch - 1][key] for r in results)

def ratio(a, b):
    return a / b if a is not None and b else None

fmt_s = lambda v: "-" if v is None else f"{v:.3f}"
fmt_pct = lambda v: "-" if v is None else f"{v:.1%}"
fmt_x = lambda v: "-" if v is None else f"{v:.2f}x"

batches = -(-o["samples"] // o["batch"])
floor = batches * o["compute_ms"] / 1000
ours_loader = f"EpochLoader (threads {o['threads']}, depth {o['depth']})"
torch_loader = f"DataLoader(shuffle=True, num_workers={torch[0]['workers']})" if torch else "DataLoader"
ours_name, torch_name = f"tiercache {ours_loader}", f"PyTorch {torch_loader}"
setup = (f"{host}; {o['samples']} files, {o['dataset_bytes'] / 2**20:.0f} MiB ({dataset_note}); "
         f"{o['latency_ms']:g} ms per origin read; batch {o['batch']}, {o['compute_ms']:g} ms compute per batch; "
         f"{len(epochs)} epochs; ours: {ours_loader}, dram {o['dram_bytes'] / 2**20:.0f} MiB, "
         f"prefetch window {o['prefetch_window']}; baseline: {torch_loader + ', ' if torch else ''}{torch_note}; "
         f"{'median of 1 run' if runs == '1' else f'medians of {runs} runs'}")

print(f"## Slow origin ({o['latency_ms']:g} ms per read): EpochLoader vs PyTorch DataLoader")
print()
print(f"- setup: {setup}")
print(f"- no-stall floor (compute alone): {floor:.3f} s per epoch ({batches} batches x {o['compute_ms']:g} ms)")
print("- stall = time blocked waiting for the next batch / epoch time, on both sides; epoch time includes "
      "starting the loader (EpochLoader construction; iter(DataLoader), which starts its workers)")
if not torch:
    print(f"- PyTorch side {torch_note}")
print()
head = " | ".join(f"epoch {e} s" for e in epochs) + " | " + " | ".join(f"stall {e}" for e in epochs)
print(f"| | {head} |")
print("|---|" + "---:|" * (2 * len(epochs)))
for name, res in ((ours_name, ours), (torch_name, torch)):
    cells = [fmt_s(med(res, e, "epoch_s")) for e in epochs] + [fmt_pct(med(res, e, "stall")) for e in epochs]
    print(f"| {name} | " + " | ".join(cells) + " |")
cells = [fmt_x(ratio(med(ours, e, "epoch_s"), med(torch, e, "epoch_s"))) for e in epochs] + ["" for _ in epochs]
print("| ours / PyTorch | " + " | ".join(cells) + " |")
print()
reads = ", ".join(f"{med(ours, e, 'origin_reads'):.0f}" for e in epochs)
hits = ", ".join(f"{med(ours, e, 'dram_hits'):.0f}" for e in epochs)
loader = ", ".join(fmt_pct(med(ours, e, "loader_stall_fraction")) for e in epochs)
first = ", ".join(f"{1000 * med(ours, e, 'first_wait_s'):.1f}" for e in epochs)
print(f"- ours, per epoch (medians): origin reads {reads}; dram hits {hits}; first batch's wait {first} ms; "
      f"the loader's stall_fraction() (wait / (wait + held)) {loader}")
listed = lambda res, key, fmt: " / ".join(fmt(r["epochs"][last - 1][key]) for r in res)
print(f"- epoch {last}, each run: ours {listed(ours, 'epoch_s', fmt_s)} s, stall {listed(ours, 'stall', fmt_pct)}"
      + (f"; PyTorch {listed(torch, 'epoch_s', fmt_s)} s, stall {listed(torch, 'stall', fmt_pct)}" if torch else ""))

if result_json:
    def row(measure, key, epoch, unit, target="", met=None):
        a, b = med(ours, epoch, key), med(torch, epoch, key)
        return {"measure": measure, "ours": a, "baseline": b, "unit": unit, "ratio": ratio(a, b), "target": target,
                "met": met(a) if met else None}
    out = {"workload": "slow_origin", "title": f"Slow origin ({o['latency_ms']:g} ms per read)", "setup": setup,
           "rows": [row(f"warm epoch time (epoch {last}), s", "epoch_s", last, "s"),
                    row(f"warm stall fraction (epoch {last})", "stall", last, "fraction", "<= 5% stall", lambda v: v <= 0.05),
                    row("cold epoch time (epoch 1), s", "epoch_s", 1, "s")]}
    with open(result_json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
EOF
cat "$report"
log "written to $report${RESULT_JSON:+ and $RESULT_JSON}"
