#!/usr/bin/env bash
# Fails (and cleans up lazily) if a test mount of this build tree is still up after the mount
# tests. TAG is the build's test tag (tests/CMakeLists.txt): its tests' folders, mounts included,
# are named tiercache-test-TAG-...; the mounts of another build's tests, running beside this one,
# are not ours to judge or unmount.
#   tests/no-mounts-left.sh TAG
set -u
tag=${1:?usage: no-mounts-left.sh TAG, the build tree test tag}
[[ $tag =~ ^[0-9a-z]+$ ]] || { echo "no-mounts-left: bad tag '$tag'" >&2; exit 2; }
left=$(awk -v pat="/tiercache-test-$tag-" '$3 ~ /^fuse/ && index($2, pat) {print $2}' /proc/mounts)
[ -z "$left" ] && { echo "no test mount of this build (tiercache-test-$tag-) left"; exit 0; }
echo "mounts left behind by the tests:"
for m in $left; do
  m=$(printf '%b' "$m")  # /proc/mounts escapes spaces as \040
  echo "  $m"
  fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"
done
exit 1
