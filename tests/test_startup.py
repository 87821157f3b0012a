"""What a start of `ipft` costs: the modules it imports on the way to tracing (the first start of a
boot, which reads the kernel, included).

Under emulation every module costs 20-30 ms (stat, open and read through the guest's 9p root), so
the path from `ipft -m MARK` to "tracing N functions" imports only what it uses. These tests hold
the modules that were cut from it out of it, and check the small replacements that made that possible.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import subprocess
import sys
import threading
import time
import zlib

import pytest

from ipft_web import cachefiles, cli
from ipft_web.backends import parallel_map

# Modules a warm start used to import and no longer needs (with what pulled them in).
CUT = {
    "shutil": "argparse's formatter (and with it bz2, lzma)", "bz2": "shutil", "lzma": "shutil",
    "tempfile": "the cache writer", "random": "tempfile",
    "hashlib": "cache keys (OpenSSL)", "_hashlib": "hashlib",
    "base64": "images and symbol tables", "gzip": "the shipped program",
    "concurrent.futures": "attach and detach threads", "queue": "concurrent.futures",
    "ipft_web.marks.spec": "--mark-rule's vocabulary, for every trace",
    "dataclasses": "the record classes (ipft_web/records.py)", "inspect": "dataclasses", "ast": "inspect",
    "dis": "inspect",
    "logging": "every module's logger (ipft_web/logs.py)", "traceback": "logging", "tokenize": "traceback",
    "textwrap": "traceback", "string": "logging",
    "pathlib": "cache and resource paths (strings on the way to tracing)", "urllib.parse": "pathlib",
    "ipaddress": "urllib.parse; IPv4 addresses are formatted by hand",
}

# Everything on the warm path of a trace with the kprobe-multi backend, imported the way a start does.
WARM_PATH = ("import ipft_web.cli as c; c.build_parser().parse_args(['-m', '0x1']);"
             "import ipft_web.tracer, ipft_web.program, ipft_web.prebuilt, ipft_web.bpfcache, ipft_web.interrupt;"
             "import ipft_web.backends.kprobe_multi, ipft_web.backends.tracepoint, ipft_web.kernel.view;"
             "import ipft_web.kernel.snapshot, ipft_web.kernel.catalog, ipft_web.kernel.kallsyms, ipft_web.marks.cli;"
             "import sys; print(' '.join(sorted(sys.modules)))")


# ... and what a first start adds to it: reading the kernel (BTF, kallsyms, the catalog)
COLD_PATH = WARM_PATH.replace("import sys;", "from ipft_web.kernel.view import KernelView; KernelView._read(None, None);"
                              "import sys;")


@pytest.mark.parametrize("path", [WARM_PATH, COLD_PATH], ids=["warm", "kernel read"])
def test_the_way_to_tracing_imports_none_of_the_cut_modules(path, tmp_path):
    out = subprocess.run([sys.executable, "-c", path], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         env=dict(os.environ, IPFT_CACHE_DIR=str(tmp_path)))
    assert out.returncode == 0, out.stderr
    imported = set(out.stdout.split())
    # the interpreter's start (site, .pth files) may import some of them itself: only ours count
    at_start = set(subprocess.run([sys.executable, "-c", "import sys; print(' '.join(sys.modules))"],
                                  capture_output=True, text=True, timeout=60).stdout.split())
    back = {m: why for m, why in CUT.items() if m in imported - at_start}
    assert not back, f"imported again on the way to tracing: {back}"


@pytest.mark.root
def test_a_trace_announces_tracing_without_the_cut_modules(tmp_path):
    """The real thing: modules loaded at the moment `ipft` says it is tracing (host: tracepoints)."""
    from ipft_testlib import IN_GUEST
    probe = ("import sys\nbefore = set(sys.modules)\n"
             "class W:\n    def __init__(s, f): s.f, s.mods = f, None\n"
             "    def write(s, t):\n        if s.mods is None and t.startswith('tracing '): s.mods = set(sys.modules)\n"
             "        return s.f.write(t)\n    def __getattr__(s, n): return getattr(s.f, n)\n"
             "w = sys.stderr = W(sys.stderr)\nsys.argv = ['ipft'] + sys.argv[1:]\n"
             "try:\n    from ipft_web.cli import main\n    main()\n"
             "finally:\n    sys.stderr = w.f\n"
             "    print('modules:', ' '.join(sorted((w.mods or set()) - before)), file=sys.stderr)\n")
    args = ["-r", "^(ip_rcv|icmp_rcv)$"] if IN_GUEST else ["-b", "tracepoint"]
    env = dict(os.environ, IPFT_CACHE_DIR=str(tmp_path / "c"))
    for _ in range(2):   # the first reads the kernel; the second is the warm start (the view is stored)
        run = subprocess.run([sys.executable, "-c", probe, "-m", "0x7e57", "--duration", "0.3", *args], env=env,
                             capture_output=True, text=True, timeout=900)
        assert "tracing " in run.stderr, run.stderr
        line = [ln for ln in run.stderr.splitlines() if ln.startswith("modules:")][-1]
        imported = set(line.split()[1:])
        assert imported, run.stderr
        assert not {m for m in CUT if m in imported}, line


def test_terminal_width_follows_columns_like_shutil(monkeypatch):
    monkeypatch.setenv("COLUMNS", "132")
    assert cli.terminal_width() == 132
    for bad in ("0", "-5", "wide", ""):
        monkeypatch.setenv("COLUMNS", bad)
        assert cli.terminal_width() > 0
    monkeypatch.setenv("COLUMNS", "100")
    text = cli.build_parser().format_help()
    assert max(len(line) for line in text.splitlines() if not line.startswith("  sudo")) <= 98


def test_help_is_argparse_help_at_that_width(monkeypatch):
    """The formatter only avoids shutil: the text is argparse's own at $COLUMNS - 2."""
    import argparse
    monkeypatch.setenv("COLUMNS", "90")
    ours = cli.build_parser().format_help()
    p = cli.build_parser()
    p.formatter_class = argparse.RawDescriptionHelpFormatter   # imports shutil, reads $COLUMNS
    assert ours == p.format_help()


def test_sha256_is_hashlibs():
    for data in (b"", b"abc", os.urandom(10000)):
        assert cachefiles.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    h = cachefiles.sha256()
    h.update(b"a")
    h.update(b"bc")
    assert h.hexdigest() == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize("data", [b"", b"\0", b"ab", b"abc", os.urandom(301)])
def test_base64_round_trip_matches_the_base64_module(data):
    text = cachefiles.b64encode(data)
    assert text == base64.b64encode(data).decode()
    assert cachefiles.b64decode(text) == data


@pytest.mark.parametrize("text", ["YW Jj", "YWJj\n", "YW=Jj", "YWJ", "Y", "é", "YWJj!", "-_-_"])
def test_base64_refuses_what_validate_true_refuses(text):
    with pytest.raises((ValueError, binascii.Error)):
        base64.b64decode(text, validate=True)
    with pytest.raises(ValueError):
        cachefiles.b64decode(text)


@pytest.mark.parametrize("value", [None, 5, b"YWJj", ["YWJj"]])
def test_base64_refuses_what_is_not_text(value):
    with pytest.raises(ValueError):
        cachefiles.b64decode(value)


def test_parallel_map_keeps_the_order_and_uses_threads():
    seen = set()

    def f(x):
        seen.add(threading.get_ident())
        time.sleep(0.001 * (x % 3))
        return x * x
    assert parallel_map(f, range(50), 8) == [x * x for x in range(50)]
    assert len(seen) > 1 and threading.get_ident() not in seen
    assert parallel_map(f, [], 8) == []
    assert parallel_map(f, [3], 8) == [9]
    assert parallel_map(f, range(5), 1) == [x * x for x in range(5)]


def test_parallel_map_raises_the_first_error_after_the_threads_end():
    started = []

    def f(x):
        started.append(x)
        if x == 3:
            raise OSError("no")
        time.sleep(0.01)
        return x
    before = threading.active_count()
    with pytest.raises(OSError, match="no"):
        parallel_map(f, range(1000), 4)
    assert len(started) < 100, "stopped taking items after the error"
    assert threading.active_count() == before


def test_the_shipped_program_reader_refuses_damaged_gzip(tmp_path, caplog):
    from ipft_web import prebuilt
    target = prebuilt.path(False, root=tmp_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    good = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    data = good.compress(b'{"key": "' + b"a" * 5000 + b'"}') + good.flush()
    for damaged in (data[:len(data) // 2], data[:-3], b"\x1f\x8b" + b"\0" * 20):
        target.write_bytes(damaged)
        with caplog.at_level("WARNING"):
            assert prebuilt.load("a" * 64, False, root=tmp_path) is None
        assert "ignoring the shipped program" in caplog.text
        caplog.clear()
