# Helpers shared by podvm's guest image scripts (sourced, not run).

step() { echo "==> $*"; }
die() { echo "error: $*" >&2; exit 1; }

# mkfs.ext4 and friends live in /usr/sbin, which a normal user's PATH may
# lack; images get the same modes whatever the caller's umask.
PATH=$PATH:/usr/sbin:/sbin
export DEBIAN_FRONTEND=noninteractive
umask 022

# is_static_busybox: whether /bin/busybox exists and is statically linked
# (Debian's default `busybox` package is dynamic; busybox-static replaces it).
is_static_busybox() {
    [ -x /bin/busybox ] && ! readelf -l /bin/busybox 2>/dev/null | grep -q 'program interpreter'
}

# ensure_tools CMD:PACKAGE... installs the Debian packages of the commands
# that are missing (with sudo when not root).
ensure_tools() {
    _missing=""
    for _pair in "$@"; do
        _cmd=${_pair%%:*}
        if [ "$_cmd" = /bin/busybox ]; then
            is_static_busybox || _missing="$_missing ${_pair#*:}"
        elif [ "${_cmd#/}" != "$_cmd" ]; then
            [ -e "$_cmd" ] || _missing="$_missing ${_pair#*:}"
        else
            command -v "$_cmd" >/dev/null 2>&1 || _missing="$_missing ${_pair#*:}"
        fi
    done
    [ -n "$_missing" ] || return 0
    _sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            die "missing:$_missing; run as root or install them (apt-get install$_missing)"
        _sudo=sudo
    fi
    step "installing:$_missing"
    $_sudo apt-get update -q >/dev/null 2>&1 || die "apt-get update failed"
    # shellcheck disable=SC2086
    $_sudo apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends \
        $_missing >/dev/null 2>&1 || die "apt-get install$_missing failed"
}

# stage_busybox DIR puts the static busybox in DIR/bin with a link for
# each applet at the place busybox names (bin/sh, sbin/ifconfig, ...).
stage_busybox() {
    # The dynamic build (package busybox) installs the same path.
    if readelf -l /bin/busybox 2>/dev/null | grep -q 'program interpreter'; then
        die "/bin/busybox is dynamically linked: apt-get install busybox-static"
    fi
    mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin"
    cp /bin/busybox "$1/bin/busybox"
    for _applet in $(/bin/busybox --list-full); do
        case "$_applet" in
        */busybox | linuxrc) continue ;;
        esac
        [ -e "$1/$_applet" ] || ln -s /bin/busybox "$1/$_applet"
    done
}

# stage_init DIR PATH builds the tiny init into DIR/PATH.
stage_init() {
    _tmp=$(mktemp -d)
    sh "$GUEST_DIR/init/build.sh" "$_tmp" || { rm -rf "$_tmp"; die "building the tiny init failed"; }
    mkdir -p "$(dirname "$1/$2")"
    rm -f "$1/$2"
    cp "$_tmp/podvm-init" "$1/$2"
    rm -rf "$_tmp"
}
