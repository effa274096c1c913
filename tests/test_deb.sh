#!/usr/bin/env bash
# Builds the .deb of a build tree (cpack -G DEB), installs it on this machine with dpkg, checks
# what it installed (both commands run, headers, CMake package, pkg-config file, man pages, the
# mount helper, the systemd unit and the Python package), builds tests/consumer against it, purges it and checks
# that its files are gone.
#   test_deb.sh BUILD_DIR CONSUMER_DIR VERSION MAN_PAGES(ON|OFF)
# Root and dpkg only (exit 77: skipped otherwise). Refuses to run where a tiercache package is
# installed, or where any file the package would install is already there: it never clobbers
# what it did not install. The package it installed is removed on every way out.
set -euo pipefail
build=$(realpath "${1:?usage: test_deb.sh BUILD_DIR CONSUMER_DIR VERSION}")
consumer=$(realpath "${2:?usage: test_deb.sh BUILD_DIR CONSUMER_DIR VERSION}")
version="${3:?usage: test_deb.sh BUILD_DIR CONSUMER_DIR VERSION}"
man_pages="${4:-OFF}"
name="test_deb"
# shellcheck source=scripts/lib/mount.sh
source "$(dirname "$(realpath "$0")")/../scripts/lib/mount.sh"

fail() { echo "$name: FAIL: $*" >&2; exit 1; }
if [ "$(id -u)" -ne 0 ]; then
    echo "$name: SKIP: needs root (dpkg -i, dpkg --purge)"
    exit 77
fi
for tool in dpkg dpkg-deb dpkg-shlibdeps cpack; do
    command -v "$tool" >/dev/null || { echo "$name: SKIP: $tool is missing (Debian: dpkg-dev, cmake)"; exit 77; }
done
if dpkg-query -W -f='${Status}' tiercache 2>/dev/null | grep -q '^install ok installed$'; then
    fail "a tiercache package ($(dpkg-query -W -f='${Version}' tiercache)) is already installed: this test" \
         "installs and removes its own, so it leaves that one alone; remove it (dpkg --purge tiercache) to run it"
fi

work=""
installed=0
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ "$installed" -eq 1 ]; then
        dpkg --purge tiercache >/dev/null 2>&1 || echo "$name: dpkg --purge tiercache failed: remove it by hand" >&2
    fi
    [ -n "$work" ] && rm -rf "$work"
    [ "$status" -eq 0 ] && echo "$name: PASS" || echo "$name: FAIL (exit status $status)" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The package owns /usr/sbin/mount.fuse.tiercache, which test_mount_helper.sh makes and removes
# under this lock: hold it while the package is installed.
lock="$(helper_lock_path)"
exec 9> "$lock"
flock -w 600 9 || fail "another run held $lock for 10 minutes"

work=$(mktemp -d /tmp/tiercache-deb-XXXXXX)

echo "== cpack -G DEB"
# What the package holds, built first: cpack's own preinstall step builds the whole tree, which
# is a no-op after a full build but not in a tree configured with CMAKE_SKIP_INSTALL_ALL_DEPENDENCY.
targets=(tiercache-fuse tiercache-cli)
[ "$man_pages" = ON ] && targets+=(tiercache-man)
cmake --build "$build" --target "${targets[@]}" >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "building ${targets[*]}"; }
(cd "$build" && cpack -G DEB -B "$work/out") >"$work/cpack.log" 2>&1 || { cat "$work/cpack.log"; fail "cpack -G DEB"; }
deb="$work/out/tiercache_${version}_$(dpkg --print-architecture).deb"
[ -f "$deb" ] || { ls -l "$work/out"; fail "cpack made no $(basename "$deb")"; }
echo "$(basename "$deb"): $(stat -c %s "$deb") bytes"
dpkg-deb -f "$deb" Package Version Depends Recommends

# Every file (not directory) of the package, as it will lie on this machine.
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { p = $6; sub(/^\./, "", p); print p }' >"$work/files"
[ -s "$work/files" ] || fail "the package holds no files"
while read -r f; do
    if [ -e "$f" ] || [ -L "$f" ]; then
        fail "$f is already there (not from a tiercache package): installing would overwrite it and removing would" \
             "delete it; remove what installed it (sudo cmake --install? see install_manifest.txt) to run this test"
    fi
done <"$work/files"

echo "== dpkg -i"
installed=1
if ! dpkg -i "$deb" >"$work/dpkg.log" 2>&1; then
    # Missing dependencies: let apt fetch them, as `apt install ./tiercache_*.deb` would.
    cat "$work/dpkg.log"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -f >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; fail "apt-get -f install"; }
fi
dpkg-query -W -f='${Status}\n' tiercache | grep -q "install ok installed" || fail "tiercache is not installed after dpkg -i"

echo "== installed files"
out=$(/usr/bin/tiercache --version)
[ "$out" = "tiercache $version" ] || fail "/usr/bin/tiercache --version printed '$out', not 'tiercache $version'"
out=$(/usr/bin/tiercache-fuse --version)
[ "$out" = "tiercache-fuse $version" ] || fail "/usr/bin/tiercache-fuse --version printed '$out'"
echo "tiercache --version: $(/usr/bin/tiercache --version)"
for f in /usr/include/tiercache/tiercache.hpp /usr/include/tiercache/version.hpp \
         /usr/share/tiercache/cmake/tiercacheConfig.cmake /usr/share/tiercache/cmake/tiercacheConfigVersion.cmake \
         /usr/share/tiercache/cmake/tiercacheTargets.cmake /usr/share/pkgconfig/tiercache.pc; do
    [ -f "$f" ] || fail "$f is not installed"
done
[ "$(pkg-config --modversion tiercache)" = "$version" ] || fail "pkg-config --modversion tiercache is not $version"

if [ "$man_pages" = ON ]; then
    for page in man1/tiercache.1.gz man1/tiercache-fuse.1.gz man1/tiercache-gen.1.gz man1/tiercache-warm.1.gz \
                man8/mount.fuse.tiercache.8.gz; do
        [ -f "/usr/share/man/$page" ] || fail "/usr/share/man/$page is not installed"
    done
    if command -v man >/dev/null; then
        [ "$(man -w tiercache)" = /usr/share/man/man1/tiercache.1.gz ] || fail "man -w tiercache: $(man -w tiercache 2>&1)"
        man -w 8 mount.fuse.tiercache >/dev/null || fail "man -w 8 mount.fuse.tiercache finds no page"
        # The page says what --help says (groff renders it where installed).
        if command -v nroff >/dev/null; then
            MANWIDTH=100 man -P cat 1 tiercache-fuse 2>/dev/null | grep -q -- "--dram" || fail "man tiercache-fuse does not show --dram"
            MANWIDTH=100 man -P cat 8 mount.fuse.tiercache 2>/dev/null | grep -q -- "--dram" || fail "man mount.fuse.tiercache does not show tiercache-fuse's page"
        fi
    fi
else
    echo "(this build makes no man pages: help2man was not found or TIERCACHE_MAN_PAGES=OFF)"
fi

# The mount helper and the unit come from packaging/'s install rules.
if grep -q 'mount.fuse.tiercache$' "$work/files"; then
    [ "$(realpath /usr/sbin/mount.fuse.tiercache)" = /usr/bin/tiercache-fuse ] \
        || fail "/usr/sbin/mount.fuse.tiercache leads to $(realpath /usr/sbin/mount.fuse.tiercache), not /usr/bin/tiercache-fuse"
else
    echo "(the package has no mount helper: packaging/ installs none)"
fi
unit=$(grep '/tiercache@.service$' "$work/files" || true)
if [ -n "$unit" ]; then
    exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
    if [ ! -x "$exec_start" ] || [ "$(dpkg -S "$exec_start" 2>/dev/null | cut -d: -f1)" != tiercache ]; then
        fail "$unit runs '$exec_start', which the package does not install"
    fi
    if command -v systemd-analyze >/dev/null; then
        systemd-analyze verify "$unit" >/dev/null 2>"$work/verify.log" || echo "(systemd-analyze verify: $(cat "$work/verify.log"))"
    fi
else
    echo "(the package has no systemd unit: packaging/ installs none)"
fi

# The Python package, for the system python3 (when the build has it), from /usr/lib/python3/dist-packages
# (-B: no __pycache__ left behind for the purge).
if grep -q '/dist-packages/tiercache/__init__.py$' "$work/files"; then
    out=$(cd / && env -u PYTHONPATH /usr/bin/python3 -B -c 'import tiercache; print(tiercache.__version__, tiercache.__file__)') \
        || fail "the installed Python package does not import"
    [ "$out" = "$version /usr/lib/python3/dist-packages/tiercache/__init__.py" ] || fail "import tiercache: '$out'"
    echo "import tiercache: $out"
    if env -u PYTHONPATH /usr/bin/python3 -c 'import torch' 2>/dev/null; then  # the EpochLoader, installed
        mkdir -p "$work/pyds/c"
        printf 'abc' > "$work/pyds/c/x"
        printf 'defg' > "$work/pyds/c/y"
        out=$(cd / && env -u PYTHONPATH /usr/bin/python3 -B -c 'import sys, tiercache, tiercache.torch as tt
ds = tt.Dataset(tiercache.open(sys.argv[1], dram="8MiB"))
print(sorted(bytes(x.numpy()).decode() for b in tt.EpochLoader(ds, batch_size=1, depth=2) for x in b))' "$work/pyds") \
            || fail "tiercache.torch.EpochLoader from the installed package failed"
        [ "$out" = "['abc', 'defg']" ] || fail "tiercache.torch.EpochLoader from the installed package: '$out'"
        echo "tiercache.torch.EpochLoader from the installed package: $out"
    fi
else
    echo "(the package has no Python package: a build without TIERCACHE_BUILD_PYTHON)"
fi

echo "== a consumer of the installed package"
mkdir -p "$work/data/class a" "$work/data/b"
head -c 150000 /dev/urandom >"$work/data/class a/one.jpg"
head -c 7 /dev/urandom >"$work/data/b/two"
cmake -S "$consumer" -B "$work/consumer" >"$work/consumer.log" 2>&1 || { cat "$work/consumer.log"; fail "configuring the consumer (find_package(tiercache) from /usr)"; }
cmake --build "$work/consumer" >>"$work/consumer.log" 2>&1 || { cat "$work/consumer.log"; fail "building the consumer"; }
grep -q "tiercache_DIR:PATH=/usr/share/tiercache/cmake" "$work/consumer/CMakeCache.txt" \
    || fail "the consumer found tiercache elsewhere: $(grep tiercache_DIR "$work/consumer/CMakeCache.txt")"
"$work/consumer/consumer" "$work/data"
# shellcheck disable=SC2046
g++ "$consumer/main.cpp" -o "$work/pc-consumer" $(pkg-config --cflags --libs tiercache)
"$work/pc-consumer" "$work/data"

echo "== dpkg --purge"
dpkg --purge tiercache >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg --purge tiercache"; }
installed=0
# Purged: dpkg knows nothing of it any more (remove alone would keep it as config-files, for postrm).
dpkg-query -W tiercache >/dev/null 2>&1 && fail "dpkg still lists tiercache after dpkg --purge: $(dpkg -l tiercache | tail -1)"
while read -r f; do
    if [ -e "$f" ] || [ -L "$f" ]; then fail "$f is still there after dpkg --purge tiercache"; fi
done <"$work/files"
[ ! -e /usr/include/tiercache ] || fail "/usr/include/tiercache is still there after dpkg --purge tiercache"
echo "$(wc -l <"$work/files") files installed and removed"
