#!/bin/bash
# Runs inside a virtme-ng guest (started by scripts/test.sh): prepares the guest, runs the
# guest and root tests, leaves junit.xml, pytest.log and rc in OUT (a directory on the host's
# file system that vng shares read-write with --rwdir).
# usage: tests/guest/run.sh OUT [pytest args...]
set -euo pipefail

OUT=${1:?usage: run.sh OUT [pytest args...]}
shift
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mkdir -p "$OUT"
exec > >(tee "$OUT/guest.log") 2>&1

stamp() { echo "[guest $(cut -d' ' -f1 /proc/uptime)s] $*"; }
stamp "kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"

# shellcheck source=tests/guest/prepare.sh
. "$REPO/tests/guest/prepare.sh"

uname -r > "$OUT/uname"
{
    echo "kernel: $(uname -r)"
    echo "kprobe_events: $(test -e /sys/kernel/tracing/kprobe_events && echo yes || echo no)"
    echo "btf: $(test -e /sys/kernel/btf/vmlinux && echo yes || echo no)"
    echo "headers: $(readlink -f "/lib/modules/$(uname -r)/build" || true)"
} > "$OUT/env.txt"

cd "$REPO"
# The in-guest time limit: on expiry pytest gets SIGINT, so it still writes its summary and junit.
LIMIT=${IPFT_GUEST_PYTEST_TIMEOUT:-1500}
stamp "pytest (limit ${LIMIT}s)"
rc=0
timeout -s INT -k 60 "$LIMIT" "$REPO/.venv/bin/python" -m pytest -p no:cacheprovider -rfEs \
    --durations=15 -o junit_suite_name="guest-$(uname -r)" --junitxml="$OUT/junit.xml" \
    -m "(guest or root) and not browser" "$@" > "$OUT/pytest.log" 2>&1 || rc=$?
echo "$rc" > "$OUT/rc"
tail -n 1 "$OUT/pytest.log"
stamp "pytest exited $rc"
sync
