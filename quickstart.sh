#!/bin/sh
# podvm quick start: install what podvm needs, build it and the test
# guests, check the host, and boot the default guest with its console on
# this terminal.
set -eu
cd "$(dirname "$0")"

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

echo "==> building podvm (release)"
cargo build --release --quiet
echo "==> building the test guests into target/guests"
sh tests/guests/build.sh target/guests

echo "==> podvm doctor"
./target/release/podvm doctor || true

echo "==> podvm run --kernel target/guests/hello"
exec ./target/release/podvm run --kernel target/guests/hello
