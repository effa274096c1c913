#!/usr/bin/env bash
# Mounting tiercache as a standard filesystem (issue 8, items 1 and 2).
#
#   tests/test_mount_helper.sh helper TIERCACHE_FUSE
#       mount -t fuse.tiercache ORIGIN DIR -o ... and an fstab line (mount -T FSTAB DIR: the
#       alternative fstab of libmount, /etc/fstab is never touched) mount; every file's bytes
#       equal the origin's; the options reached the daemon (tier sizes in .tiercache/stats,
#       allow_other in /proc/mounts); umount DIR unmounts and the daemon exits; an unknown
#       option, a bad size, a flag without its value fail with a message naming it and mount
#       nothing; mount -s ignores an unknown option; mount -f (fake) mounts nothing.
#   tests/test_mount_helper.sh unit TIERCACHE_FUSE UNIT_FILE EXAMPLE_TOML
#       systemd-analyze verify accepts the generated tiercache@.service; its ExecStart, run by
#       hand with a test config, mounts (and returns only once mounted); SIGTERM, what
#       systemctl stop sends, unmounts and ends the daemon; a daemon killed with -9 leaves a
#       dead mount that the restarted ExecStart (Restart=on-failure) replaces; the example
#       config parses.
#
# Root only (mount(8) needs /sbin/mount.fuse.tiercache and CAP_SYS_ADMIN): exits 77 (ctest:
# skipped) otherwise. It creates /usr/sbin/mount.fuse.tiercache -> TIERCACHE_FUSE only where no
# such file exists, and removes it on every way out; runs of this test are serialized by a lock
# so that one run never removes the helper another is using. Never leaves a mount behind.
set -euo pipefail

mode="${1:?usage: test_mount_helper.sh helper|unit TIERCACHE_FUSE [UNIT_FILE EXAMPLE_TOML]}"
fuse_bin="$(realpath "${2:?usage: test_mount_helper.sh helper|unit TIERCACHE_FUSE [UNIT_FILE EXAMPLE_TOML]}")"
here="$(cd "$(dirname "$0")" && pwd)"
name="test_mount_helper($mode)"

if [ "$(id -u)" -ne 0 ]; then
    echo "$name: SKIP: needs root (mount(8), /usr/sbin/mount.fuse.tiercache); run the mount tests as root"
    exit 77
fi
[ -e /dev/fuse ] || { echo "$name: /dev/fuse is missing: cannot mount" >&2; exit 1; }

# shellcheck source=scripts/lib/mount.sh
source "$here/../scripts/lib/mount.sh"

helper_link=/usr/sbin/mount.fuse.tiercache
made_link=""
work=""
mounts=()
daemons=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for m in "${mounts[@]}"; do unmount_safely "$m" "$name"; done
    for p in "${daemons[@]}"; do  # a daemon exits once unmounted; never leave one behind
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    # Only the link this run made, and only if it is still ours.
    if [ -n "$made_link" ] && [ "$(readlink "$helper_link" 2>/dev/null)" = "$fuse_bin" ]; then rm -f "$helper_link"; fi
    # Never rm -rf through a mount: anything still mounted under $work keeps $work.
    if [ -n "$work" ] && ! awk -v w="$work/" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        [ "$status" -eq 0 ] || for f in "$work"/*.log; do [ -e "$f" ] && { echo "--- $f:"; cat "$f"; }; done
        rm -rf "$work"
    fi
    [ "$status" -eq 0 ] && echo "$name: PASS" || echo "$name: FAIL (exit status $status)" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "$name: FAIL: $*" >&2; exit 1; }

# One run at a time across build trees: each may make (and removes) the one helper link.
lock="$(helper_lock_path)"
exec 9> "$lock"
flock -w 600 9 || fail "another run held $lock for 10 minutes"

# tiercache-test-TAG-: this build's test folders, the ones its no-mounts-left fixture checks.
work="$(mktemp -d "$(realpath "${TMPDIR:-/tmp}")/tiercache-test-${TIERCACHE_TEST_TAG:-manual}-mh.XXXXXX")"
origin="$work/origin"
mkdir -p "$origin/n01/sub" "$origin/n02"
head -c 0 /dev/urandom > "$origin/n01/empty"
head -c 1 /dev/urandom > "$origin/n01/one"
head -c 131072 /dev/urandom > "$origin/n01/sub/block.jpg"
head -c 300001 /dev/urandom > "$origin/n02/big.jpg"
for i in $(seq 20); do head -c $((i * 997)) /dev/urandom > "$origin/n02/f$i.jpg"; done
printf 'hello, tiercache\n' > "$origin/with space.txt"

# Sets mnt to a new mountpoint $work/$1, unmounted on every way out (no $(...): a subshell
# would lose the list).
new_mountpoint() { mnt="$work/$1"; mkdir -p "$mnt"; mounts+=("$mnt"); }

# Every file of the origin read through the mount, byte for byte, and nothing more or less.
same_bytes() {
    diff -r "$origin" "$1" > "$work/diff.out" 2>&1 || { cat "$work/diff.out" >&2; fail "$1 differs from the origin"; }
    local n m
    n=$(find "$1" -type f | wc -l)
    m=$(find "$origin" -type f | wc -l)
    if [ "$n" -ne "$m" ] || [ "$n" -ne 25 ]; then fail "$1 shows $n files, the origin $m (of 25)"; fi
}

# The daemon serving $1 (its command line names the mountpoint), for the exit check.
daemon_of() { pgrep -f -- " $1( |$)" | head -1; }

wait_gone() {  # $1: pid; the daemon exits after an unmount, within 10 s
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    fail "daemon $1 still runs 10 s after its mount went"
}

stat_field() {  # $1 mountpoint, $2 tier, $3 field, from .tiercache/stats
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tiers"][sys.argv[2]][sys.argv[3]])' \
        "$1/.tiercache/stats" "$2" "$3"
}

# A command that must fail, print $2 (a regex) on stderr, and leave $3 unmounted.
must_fail() {
    local what="$1" pattern="$2" mnt="$3"
    shift 3
    if "$@" > "$work/err.out" 2>&1; then fail "$what: '$*' succeeded"; fi
    grep -Eq -- "$pattern" "$work/err.out" || { cat "$work/err.out" >&2; fail "$what: no '$pattern' in the message"; }
    ! is_mounted "$mnt" || fail "$what: $mnt was mounted all the same"
    echo "$name: $what refused: $(head -1 "$work/err.out")"
}

if [ "$mode" = helper ]; then
    if [ -e "$helper_link" ] || [ -L "$helper_link" ]; then
        [ "$(readlink -f "$helper_link")" = "$fuse_bin" ] ||
            fail "$helper_link exists (-> $(readlink -f "$helper_link")), not this build's: remove it (an installed package?) to test this build"
        # A link into this build tree is a run's that was killed before its trap (ctest's
        # timeout): no package makes one. Ours now, so it goes at the end.
        made_link=1
    else
        ln -s "$fuse_bin" "$helper_link"
        made_link=1
    fi

    # 1. mount -t fuse.tiercache ORIGIN DIR -o ...
    new_mountpoint mnt-o
    mkdir "$work/nvme"
    mount -t fuse.tiercache "$origin" "$mnt" \
        -o "dram=64MiB,nvme=$work/nvme:32MiB,kernel_cache=off,log=$work/fuse-o.log,nofail,_netdev,x-systemd.automount"
    is_mounted "$mnt" || fail "mount -t fuse.tiercache returned but $mnt is not mounted"
    [ "$(findmnt -n -o FSTYPE "$mnt")" = fuse.tiercache ] || fail "$mnt is $(findmnt -n -o FSTYPE "$mnt"), not fuse.tiercache"
    same_bytes "$mnt"
    same_bytes "$mnt"  # again, from the cache
    [ "$(stat_field "$mnt" dram capacity_bytes)" -eq $((64 << 20)) ] || fail "dram=64MiB did not reach the daemon"
    [ "$(stat_field "$mnt" nvme capacity_bytes)" -eq $((32 << 20)) ] || fail "nvme=DIR:32MiB did not reach the daemon"
    pid="$(daemon_of "$mnt")"
    [ -n "$pid" ] || fail "no daemon serves $mnt"
    daemons+=("$pid")
    umount "$mnt"
    ! is_mounted "$mnt" || fail "umount $mnt left it mounted"
    wait_gone "$pid"
    echo "$name: mount -t fuse.tiercache -o ...: 25 files equal the origin's, tiers as given, umount ended the daemon"

    # 2. An fstab line, from an alternative fstab (mount -T): mount DIR alone.
    new_mountpoint mnt-fstab
    printf '# test fstab\n%s %s fuse.tiercache dram=32MiB,allow_other,nofail,noauto,log=%s 0 0\n' \
        "$origin" "$mnt" "$work/fuse-fstab.log" > "$work/fstab"
    mount -T "$work/fstab" "$mnt"
    is_mounted "$mnt" || fail "mount -T FSTAB $mnt returned but it is not mounted"
    same_bytes "$mnt"
    [ "$(stat_field "$mnt" dram capacity_bytes)" -eq $((32 << 20)) ] || fail "fstab's dram=32MiB did not reach the daemon"
    findmnt -n -o OPTIONS "$mnt" | grep -q allow_other || fail "fstab's allow_other is not in the mount's options"
    pid="$(daemon_of "$mnt")"
    daemons+=("$pid")
    umount "$mnt"
    ! is_mounted "$mnt" || fail "umount $mnt left it mounted"
    wait_gone "$pid"
    echo "$name: fstab line (mount -T FSTAB DIR): 25 files equal the origin's, allow_other set, umount ended the daemon"

    # 3. Bad options: a clear message, nothing mounted.
    new_mountpoint mnt-bad
    must_fail "an unknown option" "unknown mount option 'bogus'" "$mnt" \
        mount -t fuse.tiercache "$origin" "$mnt" -o dram=32MiB,bogus=1
    must_fail "a bad size" "12XB" "$mnt" mount -t fuse.tiercache "$origin" "$mnt" -o dram=12XB
    must_fail "a value missing" "'nvme' needs a value" "$mnt" mount -t fuse.tiercache "$origin" "$mnt" -o nvme
    must_fail "a bad value" "kernel.cache" "$mnt" mount -t fuse.tiercache "$origin" "$mnt" -o kernel_cache=maybe
    printf '%s %s fuse.tiercache dram=32MiB,colour=red 0 0\n' "$origin" "$mnt" > "$work/fstab-bad"
    must_fail "an fstab line's unknown option" "unknown mount option 'colour'" "$mnt" mount -T "$work/fstab-bad" "$mnt"
    must_fail "a missing origin" "no such directory" "$mnt" mount -t fuse.tiercache "$work/nothing" "$mnt" -o dram=32MiB

    # 4. mount -f (fake) checks and mounts nothing; mount -s ignores what it does not know.
    mount -f -t fuse.tiercache "$origin" "$mnt" -o dram=32MiB
    ! is_mounted "$mnt" || fail "mount -f (fake) mounted"
    mount -s -t fuse.tiercache "$origin" "$mnt" -o dram=32MiB,bogus=1 2> "$work/sloppy.err"
    is_mounted "$mnt" || fail "mount -s with an unknown option did not mount"
    grep -q "ignoring unknown mount option 'bogus=1'" "$work/sloppy.err" || fail "mount -s did not name the ignored option"
    pid="$(daemon_of "$mnt")"
    daemons+=("$pid")
    same_bytes "$mnt"
    umount "$mnt"
    wait_gone "$pid"
    echo "$name: mount -f mounted nothing, mount -s ignored bogus=1 and mounted"

elif [ "$mode" = unit ]; then
    unit="${3:?unit mode needs UNIT_FILE}"
    example="${4:?unit mode needs EXAMPLE_TOML}"
    [ -f "$unit" ] || fail "no unit file $unit"

    # systemd-analyze verify checks the unit offline (no systemd as PID 1 here). It also checks
    # that ExecStart's program exists: verify a copy naming this build's binary, as an instance.
    exec_start="$(sed -n 's/^ExecStart=//p' "$unit")"
    [ -n "$exec_start" ] || fail "$unit has no ExecStart="
    installed_bin="${exec_start%% *}"
    mkdir "$work/units"
    sed "s|$installed_bin|$fuse_bin|" "$unit" > "$work/units/tiercache@.service"
    if command -v systemd-analyze > /dev/null; then
        (cd "$work/units" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$work/units/tiercache@.service") \
            > "$work/verify.out" 2>&1 || { cat "$work/verify.out" >&2; fail "systemd-analyze verify refused $unit"; }
        # It exits 0 on unknown keys and bad values, only warning: any line it prints fails.
        if [ -s "$work/verify.out" ]; then
            cat "$work/verify.out" >&2
            fail "systemd-analyze verify has something to say about the unit"
        fi
        echo "$name: systemd-analyze verify accepts the unit, without a warning"
    else
        fail "systemd-analyze is missing (apt-get install systemd)"
    fi
    grep -q '^Type=forking' "$unit" || fail "the unit is not Type=forking"
    grep -q '^Restart=on-failure' "$unit" || fail "the unit does not restart on failure"

    # ExecStart by hand, for an instance 'ds' whose config is in $work (not /etc/tiercache).
    new_mountpoint mnt-unit
    config_dir="$(dirname "$(sed -n 's/^ExecStart=.*--config \([^ ]*\)%i\.toml.*/\1x/p' "$unit")")"
    cat > "$work/ds.toml" << EOF
origin = "$origin"
[[tier]]
kind = "dram"
size = "48MiB"
[mount]
mountpoint = "$mnt"
log = "$work/fuse-unit.log"
EOF
    command_line="${exec_start//%i/ds}"
    command_line="${command_line//$config_dir/$work}"
    command_line="${command_line/#$installed_bin/$fuse_bin}"
    echo "$name: ExecStart as run: $command_line"
    # shellcheck disable=SC2086 # the unit's words, as systemd splits them (no quotes in ours)
    $command_line
    is_mounted "$mnt" || fail "ExecStart returned (Type=forking: started) but $mnt is not mounted"
    same_bytes "$mnt"
    [ "$(stat_field "$mnt" dram capacity_bytes)" -eq $((48 << 20)) ] || fail "the config's dram tier did not reach the daemon"
    pid="$(pgrep -f -- "--config $work/ds.toml" | head -1)"
    [ -n "$pid" ] || fail "no daemon left after ExecStart: Type=forking needs one"
    daemons+=("$pid")
    kill -TERM "$pid"  # what systemctl stop sends (KillSignal=SIGTERM)
    wait_gone "$pid"
    ! is_mounted "$mnt" || fail "SIGTERM ended the daemon but left $mnt mounted"
    echo "$name: ExecStart mounted the instance's config, SIGTERM unmounted it"

    # A crash (kill -9) leaves a dead mount; Restart=on-failure runs ExecStart again: it mounts.
    $command_line
    pid="$(pgrep -f -- "--config $work/ds.toml" | head -1)"
    daemons+=("$pid")
    kill -KILL "$pid"
    wait_gone "$pid"
    is_mounted "$mnt" || fail "kill -9 left no dead mount: nothing to check"
    $command_line 2> "$work/restart.err" || { cat "$work/restart.err" >&2; fail "ExecStart after a crash failed"; }
    grep -q "detached a dead FUSE mount" "$work/restart.err" || fail "the restart did not say it detached the dead mount"
    pid="$(pgrep -f -- "--config $work/ds.toml" | head -1)"
    daemons+=("$pid")
    same_bytes "$mnt"
    kill -TERM "$pid"
    wait_gone "$pid"
    ! is_mounted "$mnt" || fail "SIGTERM left $mnt mounted after the restart"
    echo "$name: after kill -9, ExecStart again detached the dead mount and mounted; SIGTERM unmounted"

    # The example config parses: the only complaint is its origin, absent here.
    must_fail "the example config (its origin is absent here)" "origin '/data/imagenet': no such directory" "$mnt" \
        "$fuse_bin" --config "$example" --log "$work/example.log"
else
    fail "unknown mode '$mode': helper or unit"
fi
