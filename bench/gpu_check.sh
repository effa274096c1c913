#!/usr/bin/env bash
# The loader's GPU checks in one go, for a session that has a GPU machine (issue 17): the device
# test (README's loop over many epochs, copied back and compared) and loader-h2d at several
# batch sizes against the pinned cudaMemcpyAsync baseline (target >= 0.90).
#
#   bench/gpu_check.sh pack BUILD_DIR [PACK]   # here: the binaries and the libraries they need -> PACK (_gpu-pack)
#   bench/gpu_check.sh run [PACK]              # there, from the repository root: the checks; exit 0 if all passed
#
# PACK is under the repository root and git-ignored (/_*/), so the device tool carries it
# (carry: ["_gpu-pack"]). The binaries link no CUDA library: tiercache dlopens libcudart.so.13,
# found through ld.so.cache / LD_LIBRARY_PATH, /usr/local/cuda/lib64, or TIERCACHE_CUDART.
# `run` looks for one on the machine (the toolkit, pip's nvidia-cuda-runtime) and otherwise
# uses the copy pack put in PACK/cudart (needs a driver for CUDA 13: r580 or later).
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"

if [ "$mode" = pack ]; then
    build="${2:?usage: bench/gpu_check.sh pack BUILD_DIR [PACK]}"
    pack="${3:-_gpu-pack}"
    rm -rf "$pack" && mkdir -p "$pack/bin" "$pack/lib" "$pack/cudart"
    for b in tests/unit-tests bench/tiercache-bench; do
        [ -x "$build/$b" ] || { echo "gpu_check: $build/$b is not built (make unit-tests tiercache-bench)" >&2; exit 1; }
        strip --strip-debug -o "$pack/bin/$(basename "$b")" "$build/$b"
    done
    ln -sf tiercache-bench "$pack/bin/tiercache-bench-loader-h2d"
    # Every shared library they load but those of glibc itself (a bare machine may lack hwloc,
    # numa, memkind, fuse3... or have other versions).
    for b in "$pack"/bin/unit-tests "$pack"/bin/tiercache-bench; do
        ldd "$b" | awk '/=> \//{print $3}'
    done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' | while read -r lib; do
        cp -L "$lib" "$pack/lib/"
    done
    cudart=$(ls /usr/local/cuda/lib64/libcudart.so.[0-9]* 2>/dev/null | grep -E 'so\.[0-9]+$' | head -1)
    [ -n "$cudart" ] && cp -L "$cudart" "$pack/cudart/"
    du -sh "$pack"; ls "$pack"/*
    exit 0
fi
[ "$mode" = run ] || { echo "usage: bench/gpu_check.sh pack BUILD_DIR [PACK] | run [PACK]" >&2; exit 2; }

pack="${2:-_gpu-pack}"
export LD_LIBRARY_PATH="$PWD/$pack/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "== machine"
nvidia-smi --query-gpu=index,name,driver_version,pci.bus_id,memory.total --format=csv,noheader 2>&1 | head -8
nvidia-smi topo -m 2>/dev/null | head -12
echo "NUMA nodes: $(ls -d /sys/devices/system/node/node[0-9]* 2>/dev/null | wc -l); CPUs: $(nproc)"
# Which libcudart.so.13 the loader will load.
so=libcudart.so.13
if [ -z "${TIERCACHE_CUDART:-}" ]; then
    found=$(ldconfig -p 2>/dev/null | awk -v so="$so" '$1 == so {print $NF; exit}')
    [ -z "$found" ] && [ -e /usr/local/cuda/lib64/$so ] && found=/usr/local/cuda/lib64/$so
    [ -z "$found" ] && found=$(python3 -c 'import glob, site; print(next(iter(sorted(p for d in site.getsitepackages() for p in glob.glob(d + "/nvidia/**/'$so'", recursive=True))), ""))' 2>/dev/null)
    [ -z "$found" ] && [ -e "$pack/cudart/$so" ] && found="$PWD/$pack/cudart/$so"
    [ -n "$found" ] && export TIERCACHE_CUDART="$found"
fi
echo "CUDA runtime: ${TIERCACHE_CUDART:-none found (the loader will say so)}"
missing=$(ldd "$pack/bin/unit-tests" "$pack/bin/tiercache-bench" | grep 'not found')
[ -n "$missing" ] && { echo "gpu_check: libraries missing: $missing" >&2; exit 1; }

status=0
echo; echo "== the device test: README's loop, copies back compared with the origin (and the fake-device tests)"
timeout 300 "$pack/bin/unit-tests" "[cuda]" --durations yes 2>&1 | grep -vE 'tiercache info' | tail -40
rc=${PIPESTATUS[0]}; echo "unit-tests [cuda]: exit $rc"; [ "$rc" -eq 0 ] || status=1

echo; echo "== loader-h2d: copy_to_device against cudaMemcpyAsync from cudaHostAlloc memory (target >= 0.90)"
summary=""
for args in "--samples 2048 --batch 16" "--samples 2048 --batch 64" "--samples 2048 --batch 256" "--samples 2048 --batch 1024" \
            "--samples 512 --batch 32 --sample-size 1MiB"; do
    echo "-- $args"
    out=$(timeout 240 "$pack/bin/tiercache-bench-loader-h2d" --runs 5 $args 2>&1)
    rc=$?
    echo "$out"
    summary+="$(printf '%-45s exit %-3s %s' "$args" "$rc" "$(echo "$out" | grep -E '^(ratio|loader-h2d)' | tail -1)")"$'\n'
    [ "$rc" -eq 0 ] || status=1
done
echo; echo "== summary"; printf '%s' "$summary"
echo "gpu_check: $([ $status -eq 0 ] && echo ALL PASSED || echo FAILED)"
exit $status
