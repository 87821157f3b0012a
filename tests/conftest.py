"""Shared test set-up: markers, network namespaces, the `ipft` CLI as a subprocess.

Markers (registered in pyproject.toml):
  root     needs root (and a working BPF): skipped when not root
  guest    needs a guest kernel booted by scripts/test.sh (kprobes): skipped unless IPFT_IN_GUEST=1
  browser  drives Chromium with Playwright

Fixtures (the classes live in tests/ipft_testlib.py; import helpers from there, not from conftest):
  netns    factory: `a = netns("a")` makes a namespace (lo up) removed after the test;
           `netns.veth(a, "10.200.1.1/24", b, "10.200.1.2/24")` joins two with an addressed veth
           pair; `a.ping(dst)`, `a.tcp_connect(host, port)`, `a.iptables(...)`, `a.run(argv...)`
  ipft     factory: `h = ipft("-m", "0x1", "-o", "json")` starts the CLI and returns once it printed
           `tracing N functions (BACKEND)` (h.functions, h.backend); `h.stop()` sends SIGINT and
           returns an IpftResult (.returncode, .stdout, .stderr, .journeys); `h.wait_for(pred)`
           waits for a journey (-o json) while ipft runs
  module_netns, module_ipft   the same, shared by the tests of a module

Traffic never leaves the namespaces a test made (or the loopback device).
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from ipft_testlib import IN_GUEST, IS_ROOT, IpftFactory, NetnsFactory


def pytest_configure(config):
    """Compiled programs go to a cache of this test run (inherited by every `ipft` the tests start):
    the first trace of each kind compiles with BCC, the later ones load what it stored, so both
    paths run, and nothing of a test run lands in the machine's /var/cache."""
    if "IPFT_CACHE_DIR" not in os.environ:
        os.environ["IPFT_CACHE_DIR"] = config._ipft_cache = tempfile.mkdtemp(prefix="ipft-test-cache-")


def pytest_unconfigure(config):
    made = getattr(config, "_ipft_cache", None)
    if made:   # programs and kernel views of this run: megabytes each, never used again
        shutil.rmtree(made, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    skip_guest = pytest.mark.skip(
        reason="guest kernels only: scripts/test.sh boots them (IPFT_IN_GUEST=1)")
    skip_root = pytest.mark.skip(reason="needs root")
    for item in items:
        if item.get_closest_marker("guest") is not None and not IN_GUEST:
            item.add_marker(skip_guest)
        if item.get_closest_marker("root") is not None and not IS_ROOT:
            item.add_marker(skip_root)


@pytest.fixture
def netns():
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture(scope="module")
def module_netns():
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def ipft():
    factory = IpftFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture(scope="module")
def module_ipft():
    """One BPF compile for many scenarios (30-130 s each in a guest)."""
    factory = IpftFactory()
    try:
        yield factory
    finally:
        factory.cleanup()
