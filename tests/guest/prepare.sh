#!/bin/bash
# Sourced inside a virtme-ng guest before tests or benchmarks: tracing file systems, limits for
# thousands of probes, the project's venv on PATH, loopback up. Needs REPO set.
mounted() { awk -v m="$1" '$2 == m {found=1} END {exit !found}' /proc/mounts; }
mountpoint_of() {
    local dir=$1 type=$2
    mkdir -p "$dir" 2>/dev/null || true
    mounted "$dir" || mount -t "$type" "$type" "$dir" || echo "could not mount $type on $dir" >&2
}
mountpoint_of /sys/kernel/debug debugfs
mountpoint_of /sys/kernel/tracing tracefs
mountpoint_of /sys/fs/bpf bpf

# BCC opens one perf event per kprobe; the root file system is read-only (tmp, var are overlays)
ulimit -n 1048576 2>/dev/null || ulimit -n 65536
ulimit -l unlimited 2>/dev/null || true
export IPFT_IN_GUEST=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export HOME=/tmp/ipft-guest-home TMPDIR=/tmp
export PATH="$REPO/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
mkdir -p "$HOME"
ip link set lo up 2>/dev/null || true
