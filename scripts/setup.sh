#!/usr/bin/env bash
# Installs what running and testing ipft-web needs on Debian 12 (bookworm); idempotent, and quick
# (no network) when everything is already there.
#
#   scripts/setup.sh             everything: runtime + test tools + two guest kernels + Chromium
#   scripts/setup.sh --runtime   only what `ipft` / `ipft-web` need on this machine
#
# Apt packages (as root, or through sudo), then the venv .venv made from Debian's /usr/bin/python3
# with --system-site-packages (BCC's Python module comes from python3-bpfcc, not PyPI), then
# `pip install -e '.[test]'`.
#
# Guest kernels for scripts/test.sh (run under virtme-ng, which shares this root file system):
# the newest linux-image-6.1.0-N-amd64-unsigned and linux-image-6.12.N+deb12-amd64-unsigned that apt
# offers, each with its linux-headers package (BCC compiles against them inside the guest).
# An already installed pair of each series is kept (no apt index refresh needed).
# Set IPFT_SETUP_NO_APT=1 to skip the apt part (e.g. on a machine prepared otherwise).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=full
case "${1:-}" in
    "") ;;
    --runtime) MODE=runtime ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $1 (use --runtime or nothing)" >&2; exit 2 ;;
esac

log() { echo "setup: $*"; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO=(sudo); else
        echo "setup.sh: not root and no sudo: run it as root" >&2; exit 1
    fi
fi

RUNTIME_PKGS=(python3 python3-venv python3-bpfcc bpftool iptables nftables iproute2 kmod procps
              iputils-ping)
# qemu-system-x86 + busybox-static: virtme-ng (vng) boots the guest kernels with them
# (busybox builds the guest's initramfs; udev and kmod set up devices and modules in the guest).
# iperf3: bench/bench.py's throughput runs (a Python sender is slower and noisier under emulation)
TEST_PKGS=(qemu-system-x86 busybox-static udev make chromium fonts-dejavu-core iperf3)

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update() {
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq
        APT_UPDATED=1
    fi
}
installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
apt_install() {
    local missing=() p
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_update
    log "apt-get install ${missing[*]}"
    # INITRD=No: vng makes its own initramfs, so skip Debian's (a minute per kernel)
    "${SUDO[@]}" env INITRD=No DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# A kernel series is ready when an image and its header tree are installed.
have_kernel() {  # $1: glob of versions, e.g. '6.1.0-*-amd64'
    local v
    for v in /boot/vmlinuz-$1; do
        [ -e "$v" ] || continue
        v=${v#/boot/vmlinuz-}
        [ -e "/lib/modules/$v/build/Makefile" ] && return 0
    done
    return 1
}
newest_offered() {  # $1: ERE for the image package name, prints the version part
    apt-cache search --names-only "$1" | RE="$1" awk '$1 ~ ENVIRON["RE"] {print $1}' | sort -V | tail -n 1 |
        sed -E 's/^linux-image-(.*)-unsigned$/\1/'
}
install_kernel() {  # $1: version glob, $2: ERE of the image package
    if have_kernel "$1"; then return 0; fi
    apt_update
    local v
    v=$(newest_offered "$2")
    if [ -z "$v" ]; then
        echo "setup.sh: apt offers no package matching $2" >&2; exit 1
    fi
    apt_install "linux-image-$v-unsigned" "linux-headers-$v"
}

if [ "${IPFT_SETUP_NO_APT:-0}" != 1 ]; then
    if [ "$MODE" = full ]; then
        apt_install "${RUNTIME_PKGS[@]}" "${TEST_PKGS[@]}"
        install_kernel '6.1.0-*-amd64' '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$'
        install_kernel '6.12.*+deb12-amd64' '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$'
    else
        apt_install "${RUNTIME_PKGS[@]}"
        # BCC compiles against a kernel header tree: this kernel's if Debian has it, else any
        if ! ls -d /usr/src/linux-headers-*-amd64 >/dev/null 2>&1 && [ ! -e "/lib/modules/$(uname -r)/build" ]; then
            apt_update
            if apt-cache show "linux-headers-$(uname -r)" >/dev/null 2>&1; then
                apt_install "linux-headers-$(uname -r)"
            else
                v=$(newest_offered '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$')
                [ -n "$v" ] && apt_install "linux-headers-$v"
            fi
        fi
    fi
fi

# The venv: Debian's Python (the one python3-bpfcc is built for), seeing its dist-packages.
VENV="$REPO/.venv"
if [ ! -x "$VENV/bin/python" ] || ! grep -qs '^include-system-site-packages = true' "$VENV/pyvenv.cfg" ||
   ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.base_prefix != "/usr")' 2>/dev/null; then
    log "creating $VENV"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

# pip only when pyproject.toml changed since the last install (or the install is broken)
EXTRAS="test"
[ "$MODE" = runtime ] && EXTRAS=
STAMP="$VENV/.ipft-setup-$([ -n "$EXTRAS" ] && echo test || echo runtime)"
WANT=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] ||
   ! "$VENV/bin/python" -c 'import ipft_web, flask, flask_socketio, elftools' 2>/dev/null ||
   ! [ -x "$VENV/bin/ipft" ]; then
    log "pip install -e '.${EXTRAS:+[$EXTRAS]}'"
    "$VENV/bin/python" -m pip install -qq --disable-pip-version-check -e "$REPO${EXTRAS:+[$EXTRAS]}"
    echo "$WANT" > "$STAMP"
    # a runtime install must not satisfy a later test install, and vice versa is fine
    [ -n "$EXTRAS" ] && echo "$WANT" > "$VENV/.ipft-setup-runtime"
fi

"$VENV/bin/python" -c 'import bcc' 2>/dev/null ||
    { echo "setup.sh: the venv cannot import bcc (python3-bpfcc): is $VENV from /usr/bin/python3?" >&2; exit 1; }
log "ok ($MODE)"
