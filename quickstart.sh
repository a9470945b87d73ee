#!/bin/sh
# podvm quick start: install what podvm needs, build it, check the host,
# prepare the default pod-VM (Debian's stock cloud kernel, an initramfs with
# busybox and the tiny init, a small ext4 data disk) and boot it with its
# console on this terminal.
#
# On a host with hardware virtualization the guest checks its data disk
# and leaves you in a busybox shell (`reboot -f` or Ctrl-A x ends the VM).
# On a host whose KVM only emulates guests (../shared/HOST.md) it says so
# first, shows how far the kernel gets, then boots a tiny test guest.
set -eu
cd "$(dirname "$0")"
IMAGES=${PODVM_GUEST_IMAGES:-target/guest-images}

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=""
for tool in as ld cc; do
    command -v "$tool" >/dev/null 2>&1 || missing=yes
done
if [ -n "$missing" ]; then
    echo "==> installing binutils and gcc"
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends binutils gcc libc6-dev
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found: install Rust with rustup (https://rustup.rs), then run $0 again" >&2
    exit 1
fi

echo "==> building podvm (release, statically linked: cargo build-static)"
cargo build-static --quiet
PODVM=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/podvm
echo "==> building the test guests into target/guests"
sh tests/guests/build.sh target/guests

echo "==> podvm doctor"
report=$($PODVM doctor) || { echo "$report"; exit 1; }
echo "$report"

echo "==> preparing the default pod-VM in $IMAGES"
resources/guest/stock-kernel.sh "$IMAGES/stock"
resources/guest/data-disk.sh "$IMAGES/data.ext4"

cmdline="console=ttyS0 reboot=k panic=1 i8042.noaux podvm.check_disk=/dev/vda podvm.exec=/bin/sh"
boot() {
    $PODVM run --kernel "$IMAGES/stock/vmlinux" \
        --initrd "$IMAGES/stock/initramfs.cpio" \
        --disk "path=$IMAGES/data.ext4,ro" --rng --vcpus 2 --memory 256 \
        --cmdline "$1"
}

if echo "$report" | grep -q "guest execution: hardware-accelerated"; then
    echo "==> podvm run: Debian's kernel, 2 vCPUs, 256 MiB, the data disk (Ctrl-A x ends the VM)"
    exec_rc=0
    boot "$cmdline" || exec_rc=$?
    exit "$exec_rc"
fi

cat <<'EOF'
==> This host's KVM only emulates guests (see the doctor's warning above):
    Linux prints its boot log (the command line, podvm's e820 map and ACPI
    tables, 2 CPUs) for about a minute, then stops on an instruction KVM
    cannot emulate, and podvm exits 4. On a host with hardware
    virtualization the same command reaches a shell in well under a second.
==> podvm run: Debian's kernel, 2 vCPUs, 256 MiB, the data disk, earlyprintk
EOF
rc=0
boot "$cmdline earlyprintk=serial" || rc=$?
if [ "$rc" -ne 4 ]; then
    echo "error: podvm exited $rc; expected 4 (emulation failure) on this host" >&2
    exit "$rc"
fi
echo "==> as expected here: the kernel stopped where KVM's emulator does (exit 4)"
echo "==> podvm run --kernel target/guests/hello (a tiny test guest that runs to the end here)"
exec $PODVM run --kernel target/guests/hello
