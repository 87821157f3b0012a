#!/usr/bin/env bash
# Install ipft-web from this checkout and start the dashboard:
#
#   sudo scripts/install.sh [INSTALL OPTIONS] [ipft-web OPTIONS]
#
# 1. system packages, only those missing (Debian/Ubuntu: apt; Fedora/RHEL: prints the dnf line),
# 2. a venv made from /usr/bin/python3 with --system-site-packages (BCC comes from the distribution),
# 3. pip install of this checkout into it, links in /usr/local/bin,
# 4. exec ipft-web with the remaining arguments.
# Safe to run again: each step is skipped when already done (pip reinstalls the checkout).
set -euo pipefail

SRC="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IPFT_VENV:-/opt/ipft-web/venv}"
BIN_DIR="${IPFT_BIN_DIR:-/usr/local/bin}"
OS_RELEASE="${IPFT_OS_RELEASE:-/etc/os-release}"
KREL="${IPFT_KERNEL_RELEASE:-$(uname -r)}"
SYS_PYTHON="${IPFT_SYSTEM_PYTHON:-/usr/bin/python3}"
ENTRY_POINTS=(ipft ipft-web)

RUN=1 HEADERS=1 PACKAGES=1 PROJECT=1 DRY_RUN=0 UNINSTALL=0
PASS=()
ORIG_ARGS=("$@")

usage() {
    cat <<EOF
usage: sudo scripts/install.sh [INSTALL OPTIONS] [--] [ipft-web OPTIONS]

Installs what is missing, then runs ipft-web with the remaining arguments
(e.g. --host 127.0.0.1 --port 8080; see ipft-web --help after installing).

install options:
  --no-run          install only, do not start ipft-web
  --packages-only   install the system packages only (no venv, no start)
  --skip-packages   do not touch system packages (they must be there already)
  --no-headers      do not install kernel headers
  --venv DIR        where the venv goes (default /opt/ipft-web/venv; env IPFT_VENV)
  --dry-run         say what would be done, change nothing
  --uninstall       remove the venv and the links in $BIN_DIR (system packages stay)
  -h, --help        this text

Links: $BIN_DIR/ipft and $BIN_DIR/ipft-web point into the venv (env IPFT_BIN_DIR).
EOF
}

say() { printf 'install: %s\n' "$*" >&2; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

while (($#)); do
    case "$1" in
        --no-run) RUN=0 ;;
        --packages-only) PROJECT=0 RUN=0 ;;
        --skip-packages) PACKAGES=0 ;;
        --no-headers) HEADERS=0 ;;
        --venv) (($# >= 2)) || die "--venv needs a directory"; VENV="$2"; shift ;;
        --venv=*) VENV="${1#*=}" ;;
        --dry-run) DRY_RUN=1 ;;
        --uninstall) UNINSTALL=1 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; PASS+=("$@"); break ;;
        *) PASS+=("$1") ;;
    esac
    shift
done
[[ "$VENV" == /* ]] || VENV="$PWD/$VENV"
STATE_DIR="$(dirname -- "$VENV")"

run() {  # run a command, or only show it with --dry-run
    if ((DRY_RUN)); then
        printf 'would run:' >&2
        printf ' %q' "$@" >&2
        printf '\n' >&2
    else
        "$@"
    fi
}

# ---- distribution --------------------------------------------------------------------------------
os_field() {  # os_field KEY: a value from os-release, quotes removed
    local key="$1" line value
    [[ -r "$OS_RELEASE" ]] || return 0
    while IFS= read -r line || [[ -n "$line" ]]; do
        if [[ "$line" == "$key="* ]]; then
            value="${line#*=}"
            value="${value#[\"\']}"
            value="${value%[\"\']}"
            printf '%s\n' "$value"
            return 0
        fi
    done <"$OS_RELEASE"
}

family() {
    local ids
    ids=" $(os_field ID) $(os_field ID_LIKE) "
    case "$ids" in
        *" debian "* | *" ubuntu "*) echo apt ;;
        *" fedora "* | *" rhel "* | *" centos "* | *" rocky "* | *" almalinux "* | *" amzn "*) echo dnf ;;
        *) if command -v apt-get >/dev/null; then echo apt; elif command -v dnf >/dev/null; then echo dnf; else echo other; fi ;;
    esac
}

# ---- apt -----------------------------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

candidate() {  # true when apt can install package $1
    local c
    c="$(apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" {print $2; exit}')"
    [[ -n "$c" && "$c" != "(none)" ]]
}

have_own_headers() { [[ -d "/lib/modules/$KREL/build/include" || -f "/lib/modules/$KREL/build/Makefile" ]]; }

have_any_headers() {
    local d
    for d in /usr/src/linux-headers-*/include /usr/src/linux-*/include /usr/src/kernels/*/include; do
        [[ -d "$d" ]] && return 0
    done
    return 1
}

plan_apt() {  # prints the packages to install, one a line
    local p want=(python3 python3-venv python3-bpfcc iptables)
    for p in "${want[@]}"; do
        installed "$p" || echo "$p"
    done
    if ! command -v bpftool >/dev/null && [[ ! -x /usr/sbin/bpftool ]]; then
        if candidate bpftool; then
            echo bpftool
        elif candidate "linux-tools-$KREL"; then
            echo "linux-tools-$KREL"
        fi
    fi
    if ((HEADERS)) && ! have_own_headers; then
        if candidate "linux-headers-$KREL"; then
            installed "linux-headers-$KREL" || echo "linux-headers-$KREL"
        elif ! have_any_headers; then
            # Any kernel's tree will do: the BPF program reads struct fields at BTF offsets.
            local arch fallback
            arch="$(dpkg --print-architecture)"
            fallback="linux-headers-$arch"
            [[ "$(os_field ID)" == ubuntu ]] && fallback=linux-headers-generic
            if candidate "$fallback"; then
                echo "$fallback"
            fi
        fi
    fi
}

apt_lists_empty() { ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }

install_apt() {
    local plan=() updated=0
    if apt_lists_empty; then
        run apt-get update -q
        updated=1
    fi
    mapfile -t plan < <(plan_apt)
    if ((${#plan[@]} == 0)); then
        say "system packages: all present"
    else
        if ((!updated)); then
            run apt-get update -q
            mapfile -t plan < <(plan_apt)
        fi
        say "installing: ${plan[*]}"
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${plan[@]}"
        if ((!DRY_RUN)); then
            mkdir -p -- "$STATE_DIR"
            printf '%s\n' "${plan[@]}" >>"$STATE_DIR/apt-installed"
        fi
    fi
    if ((HEADERS)) && ! ((DRY_RUN)) && ! have_own_headers && ! have_any_headers; then
        say "warning: no kernel header tree (apt has none for $KREL): tracing will not compile; see docs/troubleshooting.md"
    fi
}

# ---- other distributions: say what to install ----------------------------------------------------
prerequisites_ok() {
    [[ -x "$SYS_PYTHON" ]] && "$SYS_PYTHON" -c 'import bcc, ensurepip, venv; bcc.BPF' >/dev/null 2>&1
}

check_other() {
    local fam="$1"
    if [[ "$fam" == dnf ]]; then
        say "on Fedora/RHEL install the system packages with:"
        printf '  sudo dnf install -y python3 python3-bcc bpftool iptables-nft kernel-devel-%s\n' "$KREL" >&2
    else
        say "unknown distribution: install BCC's Python module (bcc) for $SYS_PYTHON, python3 venv,"
        say "iptables and a kernel header tree with your package manager"
    fi
    if prerequisites_ok; then
        say "BCC is importable from $SYS_PYTHON: going on"
    elif ((DRY_RUN)); then
        say "(BCC is not importable from $SYS_PYTHON yet)"
    else
        die "BCC's Python module is not importable from $SYS_PYTHON: install the packages above, then run this again"
    fi
}

# ---- venv and project ----------------------------------------------------------------------------
venv_ok() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import bcc; bcc.BPF' >/dev/null 2>&1
}

make_venv() {
    if venv_ok; then
        say "venv: $VENV (kept)"
        return
    fi
    if [[ -e "$VENV" ]]; then
        [[ -f "$VENV/pyvenv.cfg" ]] || die "$VENV exists and is not a venv: move it away or pick --venv DIR"
        say "venv: $VENV cannot import bcc (made without --system-site-packages, or for another Python): remaking it"
        run rm -rf -- "$VENV"
    fi
    [[ -x "$SYS_PYTHON" ]] || die "$SYS_PYTHON not found"
    say "venv: creating $VENV"
    run mkdir -p -- "$STATE_DIR"
    run "$SYS_PYTHON" -m venv --system-site-packages "$VENV"
    if ((!DRY_RUN)) && ! venv_ok; then
        die "the new venv cannot import bcc: is python3-bpfcc installed for $SYS_PYTHON?"
    fi
}

install_project() {
    [[ -f "$SRC/pyproject.toml" ]] || die "$SRC is not an ipft-web checkout (no pyproject.toml)"
    say "pip: installing $SRC into $VENV"
    run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location "$SRC"
    local name
    for name in "${ENTRY_POINTS[@]}"; do
        if ((!DRY_RUN)) && [[ ! -x "$VENV/bin/$name" ]]; then
            die "$VENV/bin/$name is missing after pip install"
        fi
        if [[ -e "$BIN_DIR/$name" && ! -L "$BIN_DIR/$name" ]]; then
            say "warning: $BIN_DIR/$name exists and is not a link: left alone"
        elif [[ "$(readlink -- "$BIN_DIR/$name" || true)" != "$VENV/bin/$name" ]]; then
            run mkdir -p -- "$BIN_DIR"
            run ln -sfn -- "$VENV/bin/$name" "$BIN_DIR/$name"
        fi
    done
}

uninstall() {
    local name target
    for name in "${ENTRY_POINTS[@]}"; do
        target="$(readlink -- "$BIN_DIR/$name" || true)"
        if [[ "$target" == "$VENV/"* ]]; then
            run rm -f -- "$BIN_DIR/$name"
        fi
    done
    if [[ -f "$VENV/pyvenv.cfg" ]]; then
        run rm -rf -- "$VENV"
    elif [[ -e "$VENV" ]]; then
        die "$VENV is not a venv: not removing it"
    fi
    if [[ -f "$STATE_DIR/apt-installed" ]]; then
        say "system packages installed by this script (not removed; other software may use them):"
        say "  apt-get remove $(sort -u "$STATE_DIR/apt-installed" | tr '\n' ' ')"
        run rm -f -- "$STATE_DIR/apt-installed"
    fi
    run rmdir --ignore-fail-on-non-empty -- "$STATE_DIR" 2>/dev/null || true
    say "uninstalled (iptables/nft rules are removed by ipft-web itself when it stops; see docs/security.md)"
}

main() {
    if ((EUID != 0)) && ((!DRY_RUN)); then
        die "run as root: sudo $0 ${ORIG_ARGS[*]}"
    fi
    if ((UNINSTALL)); then
        uninstall
        return
    fi
    if ((PACKAGES)); then
        local fam
        fam="$(family)"
        if [[ "$fam" == apt ]]; then
            install_apt
        else
            check_other "$fam"
        fi
    fi
    ((PROJECT)) || return 0
    make_venv
    install_project
    if ((!DRY_RUN)); then
        "$VENV/bin/python" -m ipft_web.doctor || true
    fi
    if ((RUN)) && ((!DRY_RUN)); then
        exec "$VENV/bin/ipft-web" ${PASS[@]+"${PASS[@]}"}
    fi
    ((RUN)) && say "would start: $VENV/bin/ipft-web ${PASS[*]}"
    say "installed: $BIN_DIR/ipft, $BIN_DIR/ipft-web (venv $VENV)"
}

main
