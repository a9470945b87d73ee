#!/bin/sh
# Build podvm-init (init.c) into OUTDIR/podvm-init: a static, freestanding
# x86_64 executable with no libc and no SSE/AVX (-mgeneral-regs-only).
# Needs only gcc (and binutils).
set -eu
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
CC=${CC:-gcc}
TMP=$(mktemp "$1/podvm-init.XXXXXX")
trap 'rm -f "$TMP"' EXIT
command -v "$CC" >/dev/null 2>&1 || { echo "error: $CC not found (apt-get install gcc)" >&2; exit 1; }
"$CC" -static -nostdlib -ffreestanding -fno-builtin -fno-stack-protector \
    -fno-pie -no-pie -mgeneral-regs-only -fno-asynchronous-unwind-tables \
    -fno-tree-loop-distribute-patterns -fcf-protection=none -Os -Wall -Wextra \
    ${PODVM_INIT_WERROR:+-Werror} \
    -Wl,--build-id=none -Wl,-z,noexecstack \
    -o "$TMP" "$HERE/init.c"
# Renamed into place: concurrent builds never see a half-written binary.
chmod 0755 "$TMP"
mv "$TMP" "$1/podvm-init"
