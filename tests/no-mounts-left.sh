#!/usr/bin/env bash
# Fails (and cleans up lazily) if any tiercache test mount is still up after the mount tests.
set -u
left=$(awk '$3 ~ /^fuse/ && $2 ~ /tiercache-test-/ {print $2}' /proc/mounts)
[ -z "$left" ] && { echo "no tiercache test mount left"; exit 0; }
echo "mounts left behind by the tests:"
for m in $left; do
  m=$(printf '%b' "$m")  # /proc/mounts escapes spaces as \040
  echo "  $m"
  fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"
done
exit 1
