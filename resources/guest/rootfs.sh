#!/bin/sh
# A root file system image for podvm guests, built without root and
# without loop mounts (mkfs.ext4 -d copies a staging directory):
#
#   rootfs.sh OUT.ext4 [SIZE_MIB]     (default 16)
#
# Contents: busybox-static with its applet links (/bin/sh, ...), the tiny
# init as /sbin/init (also /init), empty /proc /sys /dev /tmp /root /etc.
# Boot it with root=/dev/vda (podvm's --disk path=OUT.ext4,root does that);
# the kernel runs /sbin/init, which also mounts devtmpfs on /dev.
# Files belong to the user who ran this script (mkfs.ext4 -d keeps owners);
# run as root for a root-owned image.
set -eu
GUEST_DIR=$(cd "$(dirname "$0")" && pwd)
. "$GUEST_DIR/lib.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUT.ext4 [SIZE_MIB]"
OUT=$1
SIZE=${2:-16}
case "$SIZE" in '' | *[!0-9]*) die "SIZE_MIB must be a number of MiB, not $SIZE" ;; esac
ensure_tools /bin/busybox:busybox-static mkfs.ext4:e2fsprogs gcc:gcc readelf:binutils

STAGING=$(mktemp -d)
trap 'rm -rf "$STAGING"' EXIT
step "staging busybox-static and the tiny init"
stage_busybox "$STAGING"
stage_init "$STAGING" sbin/init
ln -s sbin/init "$STAGING/init"
mkdir -p "$STAGING/proc" "$STAGING/sys" "$STAGING/dev" "$STAGING/tmp" \
    "$STAGING/root" "$STAGING/etc"
chmod 1777 "$STAGING/tmp"

step "mkfs.ext4 -d ($SIZE MiB) into $OUT"
rm -f "$OUT"
truncate -s "${SIZE}M" "$OUT" || die "cannot create $OUT"
mkfs.ext4 -q -F -L podvm-root -d "$STAGING" "$OUT" >/dev/null 2>&1 ||
    die "mkfs.ext4 -d failed for $OUT (is $SIZE MiB enough?)"
step "done: $OUT"
