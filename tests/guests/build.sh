#!/bin/sh
# build.sh OUTDIR - assemble and link every podvm test guest into OUTDIR.
#
# Needs only `as` and `ld` from GNU binutils (override with $AS / $LD).
# Produces OUTDIR/<guest> (static ELF64, loaded at 1 MiB) for each guest,
# OUTDIR/pvh (the same, plus a PVH entry note, linked with pvh.ld) and
# OUTDIR/hello.bzimage.  Quiet on success; any assembler or linker message
# is fatal.  Safe to run repeatedly and concurrently: everything is
# built in a private temporary directory inside OUTDIR and then renamed
# into place (rename is atomic within one file system).
set -eu

if [ "$#" -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

AS=${AS:-as}
LD=${LD:-ld}
SRC=$(cd "$(dirname "$0")" && pwd)
OUT=$1
GUESTS="hello bootparams smp boottimer triplefault echo sse counter virtio_blk virtio_net virtio_rng virtio_vsock virtio_balloon acpi_power acpi_devices vmgenid perf_idle perf_touch perf_blk perf_net perf_spin hostile_blk uperf_blk uperf_net"

mkdir -p "$OUT"
TMP=$(mktemp -d "$OUT/.guests-build.XXXXXX")
# On any failure (set -e), say so once; always remove the temporary directory.
trap 'rc=$?; rm -rf "$TMP"; [ "$rc" -eq 0 ] || echo "$0: building the test guests into $OUT failed" >&2' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

asm() { # asm SOURCE OBJECT
    "$AS" --64 --fatal-warnings -I "$SRC" -o "$2" "$1"
}

for g in $GUESTS; do
    asm "$SRC/$g.S" "$TMP/$g.o"
    "$LD" -m elf_x86_64 --fatal-warnings -static -nostdlib -z noexecstack \
        -z max-page-size=0x1000 --build-id=none -T "$SRC/guest.ld" \
        -o "$TMP/$g" "$TMP/$g.o"
done

asm "$SRC/pvh.S" "$TMP/pvh.o"
"$LD" -m elf_x86_64 --fatal-warnings -static -nostdlib -z noexecstack \
    -z max-page-size=0x1000 --build-id=none -T "$SRC/pvh.ld" \
    -o "$TMP/pvh" "$TMP/pvh.o"

asm "$SRC/hello_bzimage.S" "$TMP/hello_bzimage.o"
"$LD" -m elf_x86_64 --fatal-warnings -static -nostdlib -z noexecstack \
    --build-id=none -T "$SRC/bzimage.ld" --oformat binary \
    -o "$TMP/hello.bzimage" "$TMP/hello_bzimage.o"

for f in $GUESTS pvh hello.bzimage; do
    chmod 0644 "$TMP/$f"
    mv -f "$TMP/$f" "$OUT/$f"
done
