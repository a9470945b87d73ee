#!/bin/sh
# Every guest image the slow suite (tests/kernel.rs) and the quick start
# use, in one directory:
#
#   prepare.sh [--kernel] [OUTDIR]
#
# OUTDIR defaults to $PODVM_GUEST_IMAGES, else target/guest-images of this
# checkout. It receives
#   stock/          Debian's cloud kernel: vmlinux, initramfs.cpio
#   stock-generic/  Debian's generic kernel: vmlinux, initramfs.cpio
#   rootfs.ext4     busybox-static + the tiny init (16 MiB)
#   data.ext4       a data disk with /hello.txt (4 MiB)
#   podvm-kernel/   with --kernel only: the minimal kernel, vmlinux (a
#                   build of several minutes; 1.9 GiB of source and objects)
# Each step is cached: a second run downloads nothing.
set -eu
GUEST_DIR=$(cd "$(dirname "$0")" && pwd)
. "$GUEST_DIR/lib.sh"

KERNEL=""
if [ "${1:-}" = "--kernel" ]; then
    KERNEL=yes
    shift
fi
[ $# -le 1 ] || die "usage: $0 [--kernel] [OUTDIR]"
OUT=${1:-${PODVM_GUEST_IMAGES:-$GUEST_DIR/../../target/guest-images}}
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)

step "Debian's cloud kernel into $OUT/stock"
"$GUEST_DIR/stock-kernel.sh" "$OUT/stock"
step "Debian's generic kernel into $OUT/stock-generic"
PODVM_STOCK_META=linux-image-amd64 "$GUEST_DIR/stock-kernel.sh" "$OUT/stock-generic"
"$GUEST_DIR/rootfs.sh" "$OUT/rootfs.ext4" 16
"$GUEST_DIR/data-disk.sh" "$OUT/data.ext4" 4
if [ -n "$KERNEL" ]; then
    step "the minimal kernel into $OUT/podvm-kernel"
    "$GUEST_DIR/build-kernel.sh" "$OUT/podvm-kernel"
fi
step "guest images ready in $OUT"
