#!/bin/sh
# Debian's cloud kernel for podvm, no build needed:
#
#   stock-kernel.sh OUTDIR
#
# downloads linux-image-*-cloud-amd64 with `apt-get download`, and writes
#   OUTDIR/vmlinux         the uncompressed kernel (ELF with a PVH note),
#                          unpacked from the bzImage's payload (LZ4 in the
#                          cloud kernel, XZ in the generic one);
#   OUTDIR/initramfs.cpio  an uncompressed initramfs: the tiny init as /init,
#                          the virtio-mmio, block, net, rng and vsock modules
#                          (with their dependencies) listed in load order in
#                          /etc/podvm-modules, and busybox-static.
# The .deb stays in OUTDIR: a second run downloads nothing.
#
# PODVM_STOCK_META     the metapackage whose kernel is meant (default
#                      linux-image-cloud-amd64; linux-image-amd64 gives
#                      Debian's generic kernel, which also reads MP tables)
# PODVM_STOCK_KERNEL   the package itself (default: what the metapackage
#                      depends on, e.g. linux-image-6.1.0-56-cloud-amd64)
# PODVM_STOCK_MODULES  the modules to load (default below)
#
# Debian builds virtio-mmio as a module that cannot take devices from the
# command line, so this kernel finds podvm's devices in its ACPI tables.
#
# Its two steps also run alone (tests/guest_images.rs uses them):
#   stock-kernel.sh --extract-vmlinux BZIMAGE OUT   (prints the format)
#   stock-kernel.sh --stage-modules MODDIR DESTDIR "NAME..."
#       copies NAME.ko and what it depends on from MODDIR (a
#       lib/modules/VERSION tree) to DESTDIR/NAME.ko, decompressed, and
#       prints the load order.
set -eu
GUEST_DIR=$(cd "$(dirname "$0")" && pwd)
. "$GUEST_DIR/lib.sh"

# ext4 and crc32c are built into the cloud kernel, modules of the generic one.
DEFAULT_MODULES="virtio_mmio virtio_blk virtio_net virtio_rng vmw_vsock_virtio_transport ext4 crc32c_generic"

u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }

# extract_vmlinux BZIMAGE OUT: the bzImage's setup header
# (Documentation/arch/x86/boot.rst) says where the compressed payload is:
# setup_sects (0x1f1), payload_offset (0x248), payload_length (0x24c).
# Its last 4 bytes are the uncompressed size. Debian's cloud kernel is LZ4
# (legacy frames), its generic kernel XZ; gzip and zstd are known too.
extract_vmlinux() {
    _bz=$1
    [ -f "$_bz" ] && [ "$(stat -c %s "$_bz")" -ge $((0x250)) ] ||
        die "$_bz is not a bzImage (missing or too short)"
    _off=$(( ($(u8 "$_bz" $((0x1f1))) + 1) * 512 + $(u32 "$_bz" $((0x248))) ))
    _len=$(u32 "$_bz" $((0x24c)))
    _size=$(u32 "$_bz" $((_off + _len - 4)) 2>/dev/null || true)
    case "$(od -An -tx1 -j "$_off" -N6 "$_bz" | tr -d ' ')" in
    02214c18*) _fmt=LZ4 _unpack="lz4 -dc" ;;
    fd377a585a00) _fmt=XZ _unpack="xz -dc --single-stream" ;;
    28b52ffd*) _fmt=ZSTD _unpack="zstd -dc" ;;
    1f8b*) _fmt=gzip _unpack="gzip -dc" ;;
    *)
        # Not where the header says: search for the LZ4 legacy-frame magic
        # and decompress to the end (the size word is then unknown).
        _off=$(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' "$_bz" | head -n 1 | cut -d: -f1)
        [ -n "$_off" ] || die "no LZ4, XZ, ZSTD or gzip payload in $_bz"
        _len=$(($(stat -c %s "$_bz") - _off))
        _size="" _fmt=LZ4 _unpack="lz4 -dc" ;;
    esac
    # The decompressors read the trailing size word as more input and may
    # fail on it: the output is checked instead of their exit status.
    tail -c +$((_off + 1)) "$_bz" | head -c "$_len" | $_unpack >"$2.tmp" 2>/dev/null || true
    [ "$(head -c 4 "$2.tmp" | od -An -tx1 | tr -d ' ')" = "7f454c46" ] ||
        { rm -f "$2.tmp"; die "the $_fmt payload of $_bz is not an ELF file"; }
    [ -z "$_size" ] || [ "$(stat -c %s "$2.tmp")" -eq "$_size" ] ||
        { rm -f "$2.tmp"; die "vmlinux is $(stat -c %s "$2.tmp") bytes, the bzImage says $_size"; }
    # XEN_ELFNOTE_PHYS32_ENTRY (18): the PVH entry point podvm uses.
    readelf -n "$2.tmp" 2>/dev/null | grep -q 'Xen.*(0x00000012)' ||
        echo "warning: $2 has no PVH entry note; podvm will use the 64-bit boot protocol" >&2
    mv "$2.tmp" "$2"
    echo "$_fmt"
}

# stage_modules MODDIR DESTDIR NAMES: each module after its dependencies
# (the "depends=" of its .modinfo, as modules.dep would say; Debian's
# package has no modules.dep: depmod makes it at install). Sets ORDER.
stage_modules() {
    _moddir=$1
    _dest=$2
    mkdir -p "$_dest"
    _index=$(mktemp)
    find "$_moddir" -name '*.ko' -o -name '*.ko.*' | while read -r _p; do
        _n=${_p##*/}
        _n=${_n%%.ko*}
        echo "$(echo "$_n" | tr - _) $_p"
    done >"$_index"
    ORDER=""
    for _m in $3; do resolve_module "$(echo "$_m" | tr - _)"; done
    rm -f "$_index"
}

resolve_module() {
    case " $ORDER " in *" $1 "*) return 0 ;; esac
    if grep -qE "/($1|$(echo "$1" | tr _ -))\.ko\$" "$_moddir/modules.builtin" 2>/dev/null; then
        return 0
    fi
    _path=$(awk -v n="$1" '$1 == n { print $2; exit }' "$_index")
    [ -n "$_path" ] || { rm -f "$_index"; die "module $1 is neither in $_moddir nor built in"; }
    _ko=$_dest/$1.ko
    case "$_path" in
    *.ko.xz) xz -dc "$_path" >"$_ko" ;;
    *.ko.zst) zstd -q -dc "$_path" >"$_ko" ;;
    *.ko.gz) gzip -dc "$_path" >"$_ko" ;;
    *) cp "$_path" "$_ko" ;;
    esac || die "cannot decompress $_path"
    # (the for list is expanded before the recursive calls change _deps)
    _deps=$(objcopy -O binary -j .modinfo "$_ko" /dev/stdout | tr '\0' '\n' |
        sed -n 's/^depends=//p' | tr , ' ')
    for _d in $_deps; do resolve_module "$_d"; done
    ORDER="$ORDER $1"
}

case "${1:-}" in
--extract-vmlinux)
    [ $# -eq 3 ] || die "usage: $0 --extract-vmlinux BZIMAGE OUT"
    extract_vmlinux "$2" "$3"
    exit 0 ;;
--stage-modules)
    [ $# -eq 4 ] || die "usage: $0 --stage-modules MODDIR DESTDIR \"NAME...\""
    stage_modules "$2" "$3" "$4"
    echo "${ORDER# }"
    exit 0 ;;
esac

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
mkdir -p "$1" || die "cannot create $1"
OUT=$(cd "$1" && pwd)
MODULES=${PODVM_STOCK_MODULES:-$DEFAULT_MODULES}
T0=$(date +%s)

ensure_tools /bin/busybox:busybox-static lz4:lz4 cpio:cpio objcopy:binutils \
    readelf:binutils xz:xz-utils zstd:zstd gcc:gcc

cd "$OUT"
META=${PODVM_STOCK_META:-linux-image-cloud-amd64}
PKG=${PODVM_STOCK_KERNEL:-}
if [ -z "$PKG" ]; then
    PKG=$(apt-cache depends "$META" 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
    if [ -z "$PKG" ]; then
        # Offline: the newest package of that flavour already here.
        flavour=${META#linux-image}
        ls linux-image-[0-9]*"${flavour}"_*.deb >/dev/null 2>&1 ||
            die "cannot resolve $META (run apt-get update, or set PODVM_STOCK_KERNEL)"
        PKG=$(ls linux-image-[0-9]*"${flavour}"_*.deb | tail -n 1)
        PKG=${PKG%%_*}
    fi
fi
if ls "${PKG}_"*.deb >/dev/null 2>&1; then
    step "using cached $(ls "${PKG}_"*.deb | tail -n 1)"
else
    step "apt-get download $PKG"
    apt-get download -q "$PKG" >/dev/null 2>&1 || die "apt-get download $PKG failed"
fi
DEB=$(ls "${PKG}_"*.deb | tail -n 1)

step "extracting $DEB"
rm -rf pkg initramfs.d
dpkg-deb -x "$DEB" pkg || die "dpkg-deb -x $DEB failed"
BZIMAGE=$(ls pkg/boot/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$BZIMAGE" ] || die "$DEB has no /boot/vmlinuz-*"
KVER=${BZIMAGE##*/vmlinuz-}

step "unpacking vmlinux from $(basename "$BZIMAGE")"
FORMAT=$(extract_vmlinux "$BZIMAGE" vmlinux)

step "resolving modules: $MODULES"
stage_modules "pkg/lib/modules/$KVER" initramfs.d/lib/modules "$MODULES"

step "building initramfs.cpio (busybox-static, tiny init, modules:$ORDER)"
mkdir -p initramfs.d/etc initramfs.d/proc initramfs.d/sys initramfs.d/dev \
    initramfs.d/tmp initramfs.d/root
for m in $ORDER; do echo "/lib/modules/$m.ko"; done >initramfs.d/etc/podvm-modules
stage_busybox initramfs.d
stage_init initramfs.d init
# A console node lets the kernel give /init its standard output; without
# root, the tiny init opens /dev/console on devtmpfs itself.
mknod -m 600 initramfs.d/dev/console c 5 1 2>/dev/null || true
(cd initramfs.d && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >initramfs.cpio.tmp ||
    die "cpio failed"
mv initramfs.cpio.tmp initramfs.cpio
rm -rf pkg initramfs.d

step "done in $(($(date +%s) - T0)) s: $OUT/vmlinux ($(($(stat -c %s vmlinux) >> 20)) MiB, $KVER, was $FORMAT), $OUT/initramfs.cpio ($(($(stat -c %s initramfs.cpio) >> 10)) KiB)"
