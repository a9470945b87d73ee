#!/bin/sh
# Build podvm's minimal pod-VM kernel: an uncompressed x86_64 `vmlinux`
# from Debian's kernel source package, configured by `make allnoconfig`
# plus podvm-kernel.config (no modules, no PCI, virtio-mmio, PVH entry).
#
#   build-kernel.sh [--config-only] OUTDIR
#
# OUTDIR receives the source .deb, the unpacked tree (src/), the build
# tree (build/), and the results: OUTDIR/vmlinux and OUTDIR/config.
# Re-running reuses all of these: only what changed is rebuilt.
# --config-only stops after checking the configuration (OUTDIR/config).
# PODVM_KERNEL_SOURCE names another source package (default
# linux-source-6.12; if no configured apt source has it, bookworm-backports
# is tried, then linux-source-6.1 is used, with a warning).
# Needs root (or sudo) only to install the build tools when missing.
set -eu

step() { echo "==> $*"; }
die() { echo "error: $*" >&2; exit 1; }

CONFIG_ONLY=""
if [ "${1:-}" = "--config-only" ]; then
    CONFIG_ONLY=yes
    shift
fi
[ $# -eq 1 ] || die "usage: $0 [--config-only] OUTDIR"
HERE=$(cd "$(dirname "$0")" && pwd)
FRAGMENT=$HERE/podvm-kernel.config
mkdir -p "$1" || die "cannot create $1"
OUT=$(cd "$1" && pwd)
SRC_PKG=${PODVM_KERNEL_SOURCE:-linux-source-6.12}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
T0=$(date +%s)

# Build tools: command → Debian package.
missing=""
for pair in make:make gcc:gcc bc:bc bison:bison flex:flex xz:xz-utils \
    perl:perl dpkg-deb:dpkg; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair#*:}"
done
for pkg in libelf-dev libssl-dev libc6-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    step "installing build tools:$missing"
    $SUDO apt-get update -q >/dev/null || die "apt-get update failed"
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends $missing >/dev/null ||
        die "cannot install:$missing"
fi

# The source package: as asked, from bookworm-backports, or 6.1.
have_pkg() { apt-cache show "$1" >/dev/null 2>&1; }
if ! ls "$OUT/${SRC_PKG}_"*.deb >/dev/null 2>&1 && ! have_pkg "$SRC_PKG"; then
    step "apt-get update (looking for $SRC_PKG)"
    $SUDO apt-get update -q >/dev/null || die "apt-get update failed"
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    if ! have_pkg "$SRC_PKG" && [ "$codename" = bookworm ]; then
        list=/etc/apt/sources.list.d/podvm-bookworm-backports.list
        step "adding bookworm-backports ($list) to find $SRC_PKG"
        echo "deb http://deb.debian.org/debian bookworm-backports main" |
            $SUDO tee "$list" >/dev/null || die "cannot write $list"
        if ! $SUDO apt-get update -q >/dev/null; then
            $SUDO rm -f "$list"
            die "apt-get update failed with bookworm-backports added (removed $list again)"
        fi
    fi
    if ! have_pkg "$SRC_PKG"; then
        echo "warning: $SRC_PKG is not available; building linux-source-6.1 instead" >&2
        SRC_PKG=linux-source-6.1
        have_pkg "$SRC_PKG" || die "no $SRC_PKG package in the apt sources"
    fi
fi

cd "$OUT"
if ls "${SRC_PKG}_"*.deb >/dev/null 2>&1; then
    step "using cached $(ls "${SRC_PKG}_"*.deb | tail -n 1)"
else
    step "apt-get download $SRC_PKG"
    apt-get download -q "$SRC_PKG" >/dev/null 2>&1 || die "apt-get download $SRC_PKG failed"
fi
DEB=$(ls "${SRC_PKG}_"*.deb | tail -n 1)
VERSION=${SRC_PKG#linux-source-}
# Source and objects live in directories of this script's own, marked, so
# that a rerun only ever deletes what an earlier run made (never, say, the
# src/ of a checkout that OUTDIR happens to be).
TREE_MARK=.podvm-kernel-tree
SRC_DIR=$OUT/linux-src
OBJ_DIR=$OUT/kbuild
SRC=$SRC_DIR/linux-source-$VERSION
for dir in "$SRC_DIR" "$OBJ_DIR" "$OUT/pkg"; do
    [ ! -e "$dir" ] || [ -f "$dir/$TREE_MARK" ] ||
        die "$dir exists and was not made by this script: choose another OUTDIR"
done

if [ ! -f "$SRC/.podvm-unpacked" ] || [ "$(cat "$SRC/.podvm-unpacked")" != "$DEB" ]; then
    step "unpacking $DEB into $SRC_DIR"
    rm -rf "$SRC_DIR" "$OUT/pkg" "$OBJ_DIR"
    mkdir -p "$OUT/pkg" && touch "$OUT/pkg/$TREE_MARK"
    dpkg-deb -x "$DEB" "$OUT/pkg" || die "dpkg-deb -x $DEB failed"
    tarball=$(ls "$OUT"/pkg/usr/src/linux-source-*.tar.* 2>/dev/null | head -n 1)
    [ -n "$tarball" ] || die "$DEB has no /usr/src/linux-source-*.tar.*"
    mkdir -p "$SRC_DIR" && touch "$SRC_DIR/$TREE_MARK"
    tar -xf "$tarball" -C "$SRC_DIR" || die "cannot unpack $tarball"
    rm -rf "$OUT/pkg"
    [ -f "$SRC/Makefile" ] || die "$tarball did not unpack to $SRC"
    echo "$DEB" >"$SRC/.podvm-unpacked"
fi

step "configuring: make allnoconfig + $(basename "$FRAGMENT")"
mkdir -p "$OBJ_DIR" && touch "$OBJ_DIR/$TREE_MARK"
make -s -C "$SRC" O="$OBJ_DIR" KCONFIG_ALLCONFIG="$FRAGMENT" allnoconfig \
    >"$OUT/config.log" 2>&1 || die "configuration failed: see $OUT/config.log"

# Every option of the fragment must have survived (a dependency that is
# off silently drops an option in Kconfig).
lost=""
while IFS= read -r line; do
    case "$line" in
    CONFIG_*)
        grep -qxF "$line" "$OBJ_DIR/.config" || lost="$lost ${line%%=*}" ;;
    "# CONFIG_"*" is not set")
        opt=${line#\# }
        opt=${opt%% *}
        if grep -q "^$opt=" "$OBJ_DIR/.config"; then lost="$lost $opt"; fi ;;
    esac
done <"$FRAGMENT"
[ -z "$lost" ] || die "options of $(basename "$FRAGMENT") not in the final .config:$lost"
cp "$OBJ_DIR/.config" "$OUT/config"
if [ -n "$CONFIG_ONLY" ]; then
    step "done in $(($(date +%s) - T0)) s: $OUT/config ($SRC_PKG), every option of the fragment kept"
    exit 0
fi

step "building vmlinux (make -j$(nproc) vmlinux; log in $OUT/build.log)"
make -C "$SRC" O="$OBJ_DIR" -j"$(nproc)" vmlinux >"$OUT/build.log" 2>&1 ||
    die "kernel build failed: see the end of $OUT/build.log"
cp "$OBJ_DIR/vmlinux" "$OUT/vmlinux.tmp" && mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
step "done in $(($(date +%s) - T0)) s: $OUT/vmlinux ($(($(stat -c %s "$OUT/vmlinux") >> 20)) MiB, $SRC_PKG from $DEB)"
