#!/usr/bin/env bash
# bench/bench.py inside a Debian guest kernel (virtme-ng, no KVM: emulated, so compare ratios).
#   [IPFT2=/path/to/ipftrace2] bench/run-guest.sh [KERNEL_VERSION] [bench.py args...]
# KERNEL_VERSION defaults to the newest installed 6.12 (scripts/setup.sh installs it); the table is
# printed here and kept in artifacts/bench/<version>.txt.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KVER=${1:-}
[ $# -gt 0 ] && shift
if [ -z "$KVER" ]; then
    KVER=$(printf '%s\n' /boot/vmlinuz-6.12.*+deb12-amd64 | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n 1)
fi
[ -e "/boot/vmlinuz-$KVER" ] || { echo "run-guest.sh: no /boot/vmlinuz-$KVER (scripts/setup.sh)" >&2; exit 2; }
# the guest sees this tree read-only: compile it here, not in every process there
"$REPO/.venv/bin/python" -m compileall -q "$REPO/ipft_web" "$REPO/bench" > /dev/null || true
OUT="$REPO/artifacts/bench"
mkdir -p "$OUT"
# the CLI rows run `ipft` installed as scripts/install.sh does it (pip install of the checkout, not
# editable), in a venv of its own; its dependencies for the CLI come from the distribution
CLI_VENV="$OUT/cli-venv"
rm -rf "$CLI_VENV"
/usr/bin/python3 -m venv --system-site-packages "$CLI_VENV"
"$CLI_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$REPO"
"$CLI_VENV/bin/python" -m compileall -q "$CLI_VENV/lib" > /dev/null || true
inner=$(printf '%q ' env "IPFT_BENCH_CLI=$CLI_VENV/bin/ipft" "$REPO/.venv/bin/python" "$REPO/bench/bench.py" "$@")
# ipftrace2 side by side when IPFT2 names a binary (the guest shares this file system)
[ -n "${IPFT2:-}" ] && inner="IPFT2=$(printf '%q' "$(readlink -f "$IPFT2")") $inner"
cmd="REPO=$(printf '%q' "$REPO"); . \"\$REPO/tests/guest/prepare.sh\"; cd \"\$REPO\"; $inner > $(printf '%q' "$OUT/$KVER.txt") 2>&1"
PATH="$REPO/.venv/bin:$PATH" vng --disable-kvm -r "/boot/vmlinuz-$KVER" -m 3G --cpus 2 --rwdir="$OUT" \
    --exec "$cmd" < /dev/null > "$OUT/$KVER.console.log" 2>&1 || true
cat "$OUT/$KVER.txt"
