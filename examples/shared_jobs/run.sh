#!/usr/bin/env bash
# Two co-located training jobs sharing one cache: an owner (tiercache serve) and two jobs
# that attach to it, each with its own shuffled order. Run from a build tree:
#   examples/shared_jobs/run.sh [BUILD_DIR] [DATASET]
# With no DATASET it makes a small synthetic one (tiercache gen) in a temporary directory.
set -euo pipefail
build=${1:-build}
data=${2:-}
name=example-shared-$$
tmp=$(mktemp -d)
owner=
cleanup() {
    [[ -n $owner ]] && kill "$owner" 2>/dev/null && wait "$owner" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
if [[ -z $data ]]; then
    data=$tmp/data
    "$build/cache/tiercache" gen "$data" --files 2000 --classes 20 >/dev/null
fi

"$build/cache/tiercache" serve "$data" --name "$name" --dram 1GiB --log "$tmp/owner.log" &
owner=$!
for _ in $(seq 100); do [[ -S /dev/shm/tiercache-$name.sock ]] && break; sleep 0.1; done

# Two jobs at once, as a hyperparameter sweep runs them.
"$build/examples/tiercache-example-shared-job" "$name" 1 2 &
a=$!
"$build/examples/tiercache-example-shared-job" "$name" 2 2 &
b=$!
wait "$a" "$b"

"$build/cache/tiercache" stats --attach "$name"

# What sharing is for: the origin was read once and dram holds the dataset once, for both jobs.
"$build/cache/tiercache" stats --attach "$name" --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
origin, dataset, held = s["origin"]["bytes_read"], s["dataset_bytes"], s["tiers"]["dram"]["used_bytes"]
print(f"origin read {origin} bytes, dram holds {held} bytes, dataset {dataset} bytes")
sys.exit(0 if origin == dataset == held else 1)'
