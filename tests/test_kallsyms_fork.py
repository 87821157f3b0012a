"""kallsyms read and parsed in a forked child (ipft_web/kernel/kallsyms_fork.py): the same answers as
reading it here, whatever happens to the child."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from ipft_web.kernel import kallsyms, kallsyms_fork
from ipft_web.kernel.kallsyms_fork import Asked, Child

TEXT = ("ffffffff81000000 T _text\n"
        "ffffffff81001000 t dup_fn\n"
        "ffffffff81002000 T ip_rcv\n"
        "ffffffff81003000 D some_data\n"
        "ffffffff81004000 t dup_fn\n"
        "ffffffff81005000 T kfree_skbmem\n"
        "ffffffffc0001000 t mod_fn\t[nf_conntrack]\n"
        "ffffffffc0002000 t dup_fn\t[veth]\n")
NAMES = ["_text", "dup_fn", "ip_rcv", "some_data", "kfree_skbmem", "mod_fn", "missing"]


def facts(syms, names=NAMES):
    return (len(syms), syms.has_addresses,
            {n: (syms.addresses(n), syms.is_duplicate(n), syms.module(n), n in syms) for n in names})


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "kallsyms"
    p.write_text(TEXT * 3 + "".join(f"ffffffff8{i:07x} t fn_{i}\n" for i in range(5000)))
    return str(p)


@pytest.mark.parametrize("chunk", [7, 64, 1 << 18])
def test_parsed_while_read_is_what_a_whole_read_gives(path, monkeypatch, chunk):
    monkeypatch.setattr(kallsyms_fork, "CHUNK", chunk)   # lines cut anywhere between two reads
    streamed = kallsyms_fork.read_parsed(path)
    whole = kallsyms.load(path)
    assert streamed._entries == whole._entries
    assert facts(streamed) == facts(whole)


def test_an_unreadable_file_is_an_empty_table(tmp_path):
    assert len(kallsyms_fork.read_parsed(str(tmp_path / "none"))) == 0


def test_the_child_answers_as_kallsyms_does(path):
    asked = Asked(Child(path), path)
    try:
        asked.ask(NAMES[:3])                           # a batch, then names one by one
        assert facts(asked) == facts(kallsyms.load(path))
        assert asked._full is None                     # all of it from the child
    finally:
        asked.close()


def test_hidden_addresses(tmp_path):
    p = tmp_path / "kallsyms"
    p.write_text("".join("0" * 16 + line[16:] + "\n" for line in TEXT.splitlines()))   # kptr_restrict
    asked = Asked(Child(str(p)), str(p))
    try:
        assert facts(asked) == facts(kallsyms.load(str(p)))
        assert not asked.has_addresses and asked.addresses("ip_rcv") == []
    finally:
        asked.close()


def test_a_child_gone_is_replaced_by_a_read_here(path):
    child = Child(path)
    os.kill(child.pid, signal.SIGKILL)
    os.waitpid(child.pid, 0)
    asked = Asked(child, path)
    try:
        assert facts(asked) == facts(kallsyms.load(path))
        assert asked._full is not None
    finally:
        asked.close()


def test_the_terminals_signals_do_not_end_it_and_close_reaps_it(path):
    child = Child(path)
    pid = child.pid
    asked = Asked(child, path)
    asked.ask(["ip_rcv"])            # the child is up (a signal just after the fork ends it: then the
    os.kill(pid, signal.SIGINT)      # parent reads kallsyms itself). Ctrl-C reaches the whole
    os.kill(pid, signal.SIGHUP)      # process group: its parent decides
    assert asked.is_duplicate("dup_fn") and asked._full is None
    asked.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left behind
    asked.close()                    # twice is fine


def test_no_fork_beside_another_thread(monkeypatch, tmp_path):
    monkeypatch.setattr(kallsyms, "KALLSYMS", str(tmp_path / "kallsyms"))
    (tmp_path / "kallsyms").write_text(TEXT)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert not kallsyms_fork.usable()
        kallsyms.prefetch_kernel_lists()
        assert not kallsyms._children
        assert isinstance(kallsyms.load_for_catalog(), kallsyms.Kallsyms)
    finally:
        stop.set()
        t.join()
        kallsyms.forget_prefetched()


def test_one_thread_forks_and_forget_ends_the_child(monkeypatch, tmp_path):
    monkeypatch.setattr(kallsyms, "KALLSYMS", str(tmp_path / "kallsyms"))
    monkeypatch.setattr(kallsyms_fork, "usable", lambda: True)
    (tmp_path / "kallsyms").write_text(TEXT)
    kallsyms.prefetch_kernel_lists()
    try:
        child = kallsyms._children[str(tmp_path / "kallsyms")]
        syms = kallsyms.load_for_catalog()
        assert isinstance(syms, Asked) and syms.is_duplicate("dup_fn") and syms.module("mod_fn") == "nf_conntrack"
        pid = child.pid
    finally:
        kallsyms.forget_prefetched()
    assert not kallsyms._children
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_fork_refused_leaves_no_pipe_open(monkeypatch, path):
    def refuse():
        raise OSError(11, "Resource temporarily unavailable")
    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", refuse)
    with pytest.raises(OSError):
        Child(path)
    assert len(os.listdir("/proc/self/fd")) == before
