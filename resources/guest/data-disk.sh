#!/bin/sh
# A small ext4 data disk with known content, for a guest to read:
#
#   data-disk.sh OUT.ext4 [SIZE_MIB]     (default 4)
#
# It holds /hello.txt ("hello from the podvm data disk"). The tiny init's
# podvm.check_disk=/dev/vdX prints the disk's length and FNV-1a 64
# checksum; `podvm-init --checksum OUT.ext4` prints the same line on the
# host. Built without root (mkfs.ext4 -d).
set -eu
GUEST_DIR=$(cd "$(dirname "$0")" && pwd)
. "$GUEST_DIR/lib.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUT.ext4 [SIZE_MIB]"
OUT=$1
SIZE=${2:-4}
case "$SIZE" in '' | *[!0-9]*) die "SIZE_MIB must be a number of MiB, not $SIZE" ;; esac
ensure_tools mkfs.ext4:e2fsprogs

STAGING=$(mktemp -d)
trap 'rm -rf "$STAGING"' EXIT
echo "hello from the podvm data disk" >"$STAGING/hello.txt"
step "mkfs.ext4 -d ($SIZE MiB) into $OUT"
rm -f "$OUT"
truncate -s "${SIZE}M" "$OUT" || die "cannot create $OUT"
mkfs.ext4 -q -F -L podvm-data -d "$STAGING" "$OUT" >/dev/null 2>&1 ||
    die "mkfs.ext4 -d failed for $OUT"
step "done: $OUT"
