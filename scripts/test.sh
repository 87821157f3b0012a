#!/usr/bin/env bash
# The one test command: set-up, then
#   unit      pytest -m "not root and not guest"       (host; includes the Chromium tests)
#   host      pytest -m "root and not guest"           (host kernel, as root: raw tracepoints)
#   guest-*   one virtme-ng boot per guest kernel (Debian 6.1 and 6.12, kprobes), running
#             tests/guest/run.sh inside: pytest -m "(guest or root) and not browser"
# Prints each phase's pytest summary line, then `total: N passed, M failed, K skipped`;
# exits non-zero if anything failed (pytest's exit 5, no test collected, counts as a failure).
#
# usage: scripts/test.sh [pytest args...]     (extra args go to every pytest run, e.g. -k scenario)
# env:   IPFT_TEST_PHASES="unit host guest"   which phases to run (default all three)
#        IPFT_GUEST_KERNELS="VER ..."         guest kernels (default: newest installed 6.1 and 6.12)
#        IPFT_GUEST_PARALLEL=1                boot the guests at the same time (default 0: one by one;
#                                             in parallel they share 2 cores: ~45% less wall time, but
#                                             latency-sensitive tests get slower than they expect)
#        IPFT_GUEST_PYTEST_TIMEOUT=S          pytest time limit inside a guest (default 1800, lowered to
#                                             fit the budget)
#        IPFT_TEST_BUDGET=S                   the whole run's time (default 5100 = 85 min; CI allows 90):
#                                             each guest gets a share of what is left
#        IPFT_TEST_ARTIFACTS=DIR              where logs and junit files go (default artifacts/test)
#        IPFT_SKIP_SETUP=1                    do not run scripts/setup.sh first
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
START=$(date +%s)
say() { echo "[test $(( $(date +%s) - START ))s] $*"; }

ART=${IPFT_TEST_ARTIFACTS:-$REPO/artifacts/test}
PHASES=${IPFT_TEST_PHASES:-unit host guest}
GUEST_LIMIT=${IPFT_GUEST_PYTEST_TIMEOUT:-1800}
HOST_LIMIT=${IPFT_HOST_PYTEST_TIMEOUT:-900}
PARALLEL=${IPFT_GUEST_PARALLEL:-0}
BUDGET=${IPFT_TEST_BUDGET:-5100}
GUEST_OVERHEAD=300   # boot (20-80 s), shutdown, and slack, outside the in-guest pytest limit
rm -rf "$ART"
mkdir -p "$ART"
ART=$(cd "$ART" && pwd)

if [ "${IPFT_SKIP_SETUP:-0}" != 1 ]; then
    say "setup"
    scripts/setup.sh
fi
PY="$REPO/.venv/bin/python"
export PYTHONUNBUFFERED=1

# What a failed phase printed: pytest's failure section (trimmed), so CI's log shows why.
show_failures() {
    local log=$1
    [ -f "$log" ] || return 0
    echo "---- $(basename "$(dirname "$log")"): failures (full log: $log) ----"
    awk '/^=+ (FAILURES|ERRORS) =+$/ {on=1} /^=+ warnings summary =+$/ {on=0}
         /^=+ short test summary info =+$/ {on=1} on {print}' "$log" | cut -c1-400 | tail -n 300
    if ! grep -qE '^=+ (FAILURES|ERRORS) =+$' "$log"; then tail -n 60 "$log"; fi
    echo "----"
}

DIRS=()
phase_done() {  # $1: phase dir
    local dir=$1 rc
    rc=$(cat "$dir/rc" 2>/dev/null || echo none)
    say "$(basename "$dir"): $("$PY" scripts/summarize.py "$dir" | sed -n 1p | cut -d' ' -f2-)"
    [ "$rc" = 0 ] || show_failures "$dir/pytest.log"
    DIRS+=("$dir")
}

host_phase() {  # $1: name, $2: marker expression, then extra pytest args
    local name=$1 expr=$2 dir="$ART/$1" rc=0
    shift 2
    mkdir -p "$dir"
    say "$name: pytest -m \"$expr\""
    timeout -s INT -k 60 "$HOST_LIMIT" "$PY" -m pytest -rfEs -o junit_suite_name="$name" \
        --junitxml="$dir/junit.xml" -m "$expr" "$@" > "$dir/pytest.log" 2>&1 || rc=$?
    echo "$rc" > "$dir/rc"
    phase_done "$dir"
}

newest_kernel() {  # $1: ERE of a kernel version; the newest one with an image and a header tree
    local v best=""
    for v in $(printf '%s\n' /boot/vmlinuz-* | sed -n 's|^/boot/vmlinuz-||p' | sort -V); do
        [[ $v =~ $1 ]] && [ -e "/lib/modules/$v/build/Makefile" ] && best=$v
    done
    echo "$best"
}

# One boot: tests/guest/run.sh leaves junit.xml, pytest.log and rc in the phase dir (shared r/w).
guest_boot() {  # $1: kernel version, $2: pytest time limit in the guest, then extra pytest args
    local kver=$1 limit=$2 dir="$ART/guest-$1" rc=0 t0
    shift 2
    mkdir -p "$dir"
    t0=$(date +%s)
    # The guest sees this tree read-only: byte-compile it here, or every Python process in the
    # guest compiles every module from source again (seconds each under emulation).
    "$REPO/.venv/bin/python" -m compileall -q "$REPO/ipft_web" "$REPO/tests" > /dev/null || true
    local cmd
    cmd=$(printf '%q ' env "IPFT_GUEST_PYTEST_TIMEOUT=$limit" "$REPO/tests/guest/run.sh" "$dir" "$@")
    # --disable-kvm: nested KVM hangs here; TCG is slow but sure. The guest's root is this root
    # file system, read-only, with /tmp, /var, /etc as overlays; "$dir" is shared read-write.
    PATH="$REPO/.venv/bin:$PATH" timeout -k 30 $(( limit + GUEST_OVERHEAD )) \
        vng --disable-kvm -r "/boot/vmlinuz-$kver" -m 3G --cpus 2 --rwdir="$dir" --exec "$cmd" \
        < /dev/null > "$dir/console.log" 2>&1 || rc=$?
    echo "vng exit $rc, boot+tests $(( $(date +%s) - t0 )) s" > "$dir/note"
    if [ ! -f "$dir/rc" ]; then
        echo "guest $kver left no result (vng exit $rc); console:" >> "$dir/pytest.log"
        tail -n 80 "$dir/console.log" >> "$dir/pytest.log" || true
    fi
}

for phase in $PHASES; do
    case $phase in
        unit) host_phase unit "not root and not guest" "$@" ;;
        host)
            if [ "$(id -u)" -ne 0 ]; then
                say "host: not root; the root tests are skipped"
            fi
            host_phase host "root and not guest" "$@" ;;
        guest)
            if [ -n "${IPFT_GUEST_KERNELS:-}" ]; then
                read -r -a KERNELS <<< "$IPFT_GUEST_KERNELS"
            else
                KERNELS=("$(newest_kernel '^6\.1\.0-[0-9]+-amd64$')" "$(newest_kernel '^6\.12\.[0-9]+\+deb12-amd64$')")
            fi
            pids=()
            todo=${#KERNELS[@]}
            for k in "${KERNELS[@]}"; do
                if [ -z "$k" ] || [ ! -e "/boot/vmlinuz-$k" ]; then
                    d="$ART/guest-${k:-missing}"
                    mkdir -p "$d"
                    echo "guest kernel ${k:-(none found)} is not installed: run scripts/setup.sh" > "$d/pytest.log"
                    todo=$(( todo - 1 ))
                    continue
                fi
                # what is left of the budget, shared by the guests still to boot
                left=$(( BUDGET - ($(date +%s) - START) ))
                share=$(( PARALLEL == 1 ? left : left / todo ))
                limit=$(( share - GUEST_OVERHEAD ))
                [ "$limit" -gt "$GUEST_LIMIT" ] && limit=$GUEST_LIMIT
                todo=$(( todo - 1 ))
                if [ "$limit" -lt 180 ]; then
                    d="$ART/guest-$k"
                    mkdir -p "$d"
                    echo "guest $k not booted: only ${left}s of the ${BUDGET}s budget left" > "$d/pytest.log"
                    continue
                fi
                say "guest-$k: booting (vng --disable-kvm), pytest limit ${limit}s"
                if [ "$PARALLEL" = 1 ]; then
                    guest_boot "$k" "$limit" "$@" &
                    pids+=($!)
                else
                    guest_boot "$k" "$limit" "$@"
                    phase_done "$ART/guest-$k"
                fi
            done
            if [ "$PARALLEL" = 1 ]; then
                for p in "${pids[@]}"; do wait "$p" || true; done
            fi
            for k in "${KERNELS[@]}"; do
                d="$ART/guest-${k:-missing}"
                if [ "$PARALLEL" = 1 ] || [ ! -f "$d/note" ]; then phase_done "$d"; fi
            done
            ;;
        *) echo "test.sh: unknown phase $phase (unit, host, guest)" >&2; exit 2 ;;
    esac
done

say "done"
echo
rc=0
"$PY" scripts/summarize.py "${DIRS[@]}" || rc=$?
exit "$rc"
