# Shell helpers for scripts that mount tiercache-fuse (source it; it defines functions only).

# Is $1 (an absolute, symlink-free path) a mount point? /proc/mounts writes spaces as \040.
is_mounted() { awk -v m="${1// /\\040}" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }

# Unmounts $1 if mounted: fusermount3 -u, once more after a second, then lazily. $2 names the
# caller in the message if even that fails.
unmount_safely() {
    is_mounted "$1" || return 0
    fusermount3 -u "$1" 2>/dev/null || { sleep 1; fusermount3 -u "$1" 2>/dev/null; } ||
        fusermount3 -uz "$1" || echo "$2: could not unmount $1" >&2
}

# The lock that tests/test_mount_helper.sh and tests/test_deb.sh hold while either may have
# /usr/sbin/mount.fuse.tiercache in place (each makes, or installs, and removes it).
helper_lock_path() { echo "$( [ -d /run/lock ] && echo /run/lock || echo /tmp)/tiercache-test-mount-helper.lock"; }
