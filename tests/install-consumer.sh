#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds and runs a consumer against it,
# once through find_package(tiercache) and once through pkg-config.
set -euo pipefail
build=$1
consumer=$2
work=$(mktemp -d /tmp/tiercache-install-XXXXXX)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/tiercache/tiercache.hpp"
test -x "$work/prefix/bin/tiercache-fuse"
test -x "$work/prefix/bin/tiercache"
"$work/prefix/bin/tiercache" --version

mkdir -p "$work/data/class a" "$work/data/b"
head -c 150000 /dev/urandom >"$work/data/class a/one.jpg"
head -c 7 /dev/urandom >"$work/data/b/two"
: >"$work/data/b/empty"

echo "== find_package(tiercache)"
cmake -S "$consumer" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cmake-build" >/dev/null
"$work/cmake-build/consumer" "$work/data"

echo "== pkg-config tiercache"
export PKG_CONFIG_PATH="$work/prefix/share/pkgconfig"
# shellcheck disable=SC2046
g++ "$consumer/main.cpp" -o "$work/pc-consumer" $(pkg-config --cflags --libs tiercache)
"$work/pc-consumer" "$work/data"
