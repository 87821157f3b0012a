"""Shared helpers for the marks tests: a throwaway network namespace and a snapshot of its tables.

Every test that applies a rule does it inside such a namespace; the host's own tables are never touched.
(No tests here; the other test_marks_* modules import from it.)
"""
import os
import shutil
import subprocess
import uuid

import pytest

needs_root_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (ip netns)")


def sh(*argv, check=True, ns=None, **kw):
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30, **kw)


def snapshot(ns: str) -> str:
    """Everything a rule could change in namespace `ns` (timestamps removed)."""
    out = []
    for argv in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
        if shutil.which(argv[0], path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            p = sh(*argv, ns=ns, check=False)
            out.append(f"== {argv[0]} rc={p.returncode}\n" + "\n".join(
                ln for ln in p.stdout.splitlines() if not ln.startswith("#")))
    return "\n".join(out)


def make_netns(prefix="ipftm") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    sh("ip", "link", "set", "lo", "up", ns=name)
    return name


def delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture
def netns():
    name = make_netns()
    try:
        yield name
    finally:
        delete_netns(name)
