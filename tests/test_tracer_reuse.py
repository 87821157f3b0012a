"""The tracer in-process on the running kernel: compile once, trace twice, undo everything.

Root tests: on the host they use the tracepoint backend (the only one it allows); in a guest,
whatever `auto` picks.
"""
import os
import time

import pytest

from ipft_web import program
from ipft_web.config import TraceConfig
from ipft_web.tracer import Tracer

pytestmark = pytest.mark.root
MARK = 0x5E55


def session(ns, regex, backend="auto"):
    out = []
    t = Tracer(TraceConfig(mark=MARK, regex=regex, idle_timeout=0.5, backend=backend), out.append)
    t.start()
    try:
        ns.ping("127.0.0.1", count=2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any((j["tuple"] or {}).get("icmp_type") == 8 for j in out):
            t.poll(100)
    finally:
        t.stop()
    return t, out


def probe_fds() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            what = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if what in ("anon_inode:bpf-link", "anon_inode:[perf_event]"):
            out.append(what)
    return out


def test_two_sessions_share_one_compiled_program(netns):
    ns = netns("reuse")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "icmp", "-j", "MARK", "--set-mark", hex(MARK))
    regex = r"^(icmp_rcv|ip_rcv|net:netif_receive_skb|net:net_dev_queue)$"
    t1, out1 = session(ns, regex)
    t2, out2 = session(ns, regex)
    for t, out in ((t1, out1), (t2, out2)):
        assert t.stats()["state"] == "stopped" and t.stats()["lost"] == 0
        echo = [j for j in out if (j["tuple"] or {}).get("icmp_type") == 8]
        assert echo, out
        assert all(j["mark"] & 0xFFFFFFFF == MARK for j in echo)
    assert t1.program is t2.program                  # compiled once
    assert t2.timings["compile"] < 1.0               # the second session did not compile
    # every probe is gone: this process holds no BPF link or perf event any more
    assert not t2.program.in_use and not probe_fds()
    assert not getattr(t2.backend, "fds", []) and not getattr(t2.backend, "links", [])


def test_start_failure_releases_the_program():
    t = Tracer(TraceConfig(mark=MARK, regex=r"^no_such_function_anywhere$"), lambda j: None)
    with pytest.raises(Exception):
        t.start()
    prog = program._compiled.get((None, False))
    assert prog is None or not prog.in_use


def test_auto_picks_a_backend_the_regex_selects_something_for(netns):
    """-b auto with a regex that names only tracepoints: the tracepoint backend, also where kprobes
    work (kprobe-multi, kprobe and fentry have no such function, so they are passed over)."""
    ns = netns("auto-tp")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "icmp", "-j", "MARK", "--set-mark", hex(MARK))
    t, out = session(ns, r"^net:netif_receive_skb$")
    st = t.stats()
    assert st["backend"] == "tracepoint" and st["fallbacks"] == [], st
    echo = [j for j in out if (j["tuple"] or {}).get("icmp_type") == 8]
    assert echo and {h["func"] for j in echo for h in j["hits"]} <= {
        "net:netif_receive_skb", "skb:consume_skb", "skb:kfree_skb"}, out


def test_auto_falls_back_when_a_backend_refuses_everything(netns, monkeypatch):
    """-b auto: a backend the kernel refuses as a whole (every function) is detached and the next one
    used, and stats() says what happened; the trace itself is real (tracepoints of this kernel)."""
    from ipft_web import backends
    from ipft_web.kernel.view import KernelView

    class Refusing:
        kind = "kprobe-multi"
        detached = False

        def attach(self, functions, progress=None):
            return backends.AttachResult(failed={f.name: "refused (test)" for f in functions})

        def detach(self):
            Refusing.detached = True

    monkeypatch.setattr(KernelView, "backends", lambda self: ["kprobe-multi", "tracepoint"])
    monkeypatch.setattr(KernelView, "backend_works", lambda self, b: b in ("kprobe-multi", "tracepoint"))
    monkeypatch.setattr(backends, "make", lambda name, bpf, kernel: Refusing())
    ns = netns("fallback")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "icmp", "-j", "MARK", "--set-mark", hex(MARK))
    t, out = session(ns, r"^(ip_rcv|net:netif_receive_skb)$")
    st = t.stats()
    assert st["backend"] == "tracepoint", st
    assert len(st["fallbacks"]) == 1 and st["fallbacks"][0].startswith("kprobe-multi: the kernel refused all")
    assert Refusing.detached and st["failed"] == 0
    assert any((j["tuple"] or {}).get("icmp_type") == 8 for j in out), out


def test_kprobe_multi_links_by_position(netns):
    """kprobe-multi (6.12 guest): a link per skb argument position, kfree_skbmem in position 1's.
    Functions with the skb in the 1st (ip_rcv, icmp_rcv, kfree_skbmem), 2nd (ip_finish_output2,
    __ip_local_out... per kernel) position all report the right packet."""
    from ipft_web.kernel import features
    from ipft_web.kernel.view import KernelView
    if not features.have_kprobe_multi():
        pytest.skip("no kprobe-multi on this kernel")
    kernel = KernelView.load()
    wanted = ["ip_rcv", "icmp_rcv", "icmp_echo", "ip_finish_output2", "ip_output", "__ip_local_out",
              "ip_send_skb", "icmp_push_reply"]
    present = [n for n in wanted if kernel.function(n) is not None]
    positions = {kernel.function(n).pos for n in present}
    assert len(positions) >= 2, {n: kernel.function(n).pos for n in present}   # more than one position
    ns = netns("kmulti")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "icmp", "-j", "MARK", "--set-mark", hex(MARK))
    t, out = session(ns, "^(" + "|".join(present) + ")$", backend="kprobe-multi")
    st = t.stats()
    assert st["backend"] == "kprobe-multi" and st["attached"] >= len(present), st
    assert "attach_load" in st["timings"] and "attach_link" in st["timings"], st["timings"]
    echo = next(j for j in out if (j["tuple"] or {}).get("icmp_type") == 8)
    funcs = [h["func"] for h in echo["hits"]]
    assert {"ip_rcv", "icmp_rcv"} <= set(funcs), funcs
    assert {h["kind"] for h in echo["hits"] if h["func"] in present} == {"kprobe-multi"}
    seen_pos = {kernel.function(f).pos for f in funcs if f in present}
    assert len(seen_pos) >= 2, (funcs, seen_pos)      # hits through functions of different positions
    assert echo["end"] == "freed" and funcs[-1] == "kfree_skbmem", funcs   # told apart in position 1's link


def test_kprobe_multi_positions_4_and_5_share_a_link_by_cookie(netns):
    """kprobe-multi (6.12 guest): tcp_conn_request(rsk_ops, af_ops, sk, skb) has the skb 4th; its
    link, shared with position 5, gives the position in the cookie. A marked SYN to a listener shows
    it between tcp_v4_rcv and the free, and kfree_skbmem ends the journey as a free."""
    import sys

    from ipft_web.kernel import features
    from ipft_web.kernel.view import KernelView
    if not features.have_kprobe_multi():
        pytest.skip("no kprobe-multi on this kernel")
    kernel = KernelView.load()
    fn = kernel.function("tcp_conn_request")
    if fn is None or fn.pos != 4:
        pytest.skip(f"tcp_conn_request is not a position-4 skb function here: {fn}")
    five = [f.name for f in kernel.skb_functions() if f.pos == 5][:5]   # in the link, whether they run or not
    ns = netns("kmulti45")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "tcp", "--syn", "-j", "MARK", "--set-mark", hex(MARK))
    out = []
    regex = "^(" + "|".join(["tcp_v4_rcv", "tcp_conn_request", "kfree_skbmem"] + five) + ")$"
    t = Tracer(TraceConfig(mark=MARK, regex=regex, idle_timeout=0.5, backend="kprobe-multi"), out.append)
    t.start()
    try:
        # position 1 with kfree_skbmem, and 4 with 5 (a refused function splits a link)
        assert len(t.backend.links) == 2 or t.stats()["failed"], t.stats()
        code = ("import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
                "c=socket.create_connection(s.getsockname()); a,_=s.accept(); c.close(); a.close()")
        ns.run(sys.executable, "-c", code)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                "tcp_conn_request" in [h["func"] for h in j["hits"]] for j in out):
            t.poll(100)
    finally:
        t.stop()
    syn = next((j for j in out if "tcp_conn_request" in [h["func"] for h in j["hits"]]), None)
    assert syn is not None, out
    funcs = [h["func"] for h in syn["hits"]]
    assert funcs.index("tcp_v4_rcv") < funcs.index("tcp_conn_request"), funcs
    assert syn["end"] == "freed" and funcs[-1] == "kfree_skbmem", funcs


def test_a_duplicated_name_is_traced_at_each_address():
    """A name kallsyms lists twice (two static functions, e.g. add_grec in IPv4 and IPv6): kprobe
    and kprobe-multi attach at both addresses instead of refusing it (guest kernels)."""
    import re

    from ipft_web.kernel.view import KernelView
    kernel = KernelView.load()
    usable = [b for b in ("kprobe-multi", "kprobe") if b in kernel.backends()]
    dups = [f for f in kernel.skb_functions() if f.duplicate and len(kernel.addresses(f.name)) > 1]
    if not usable or not dups:
        pytest.skip("needs kprobes and a duplicated skb function name")
    dup = dups[0]
    for backend in usable:
        t = Tracer(TraceConfig(mark=MARK, regex=f"^{re.escape(dup.name)}$", backend=backend), lambda j: None)
        t.start()
        try:
            st = t.stats()
            assert st["backend"] == backend and dup.name in t.attached, st
            assert dup.name not in st["failed_funcs"], st["failed_funcs"]
            if backend == "kprobe":
                others = sum(len(kernel.addresses(n)) for n in t.attached
                             if n != dup.name and kernel.function(n) is not None and ":" not in n)
                assert len(t.backend.fds) == len(kernel.addresses(dup.name)) + others
        finally:
            t.stop()


def test_followed_skb_count_never_below_the_followed_skbs(netns):
    """ipft_config.ntracked (bpf/ipft.bpf.c) lets unmarked traffic skip the hash lookup while it is 0, so
    it must never be below the number of skbs in ipft_tracked; and a session leaves both at 0."""
    from ipft_web.kernel import sysbpf
    ns = netns("ntracked")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "icmp", "-j", "MARK", "--set-mark", hex(MARK))
    out = []
    t = Tracer(TraceConfig(mark=MARK, regex=r"^(ip_rcv|icmp_rcv|net:netif_receive_skb)$", idle_timeout=0.5),
               out.append)
    t.start()
    obj = t.program.obj

    def state():
        return program.followed_count(obj), len(sysbpf.map_keys(obj.map_fds["ipft_tracked"], 8))

    try:
        ns.ping("127.0.0.1", count=3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any((j["tuple"] or {}).get("icmp_type") == 8 for j in out):
            t.poll(100)
            count, keys = state()
            assert count >= keys, (count, keys)
        assert any((j["tuple"] or {}).get("icmp_type") == 8 for j in out), out
    finally:
        t.stop()
    assert state() == (0, 0)


def test_a_start_stopped_while_attaching_detaches_and_says_so():
    """Stop pressed while kprobes attach one by one (a minute under emulation): the start ends
    within a few functions, and nothing stays attached."""
    from ipft_web.errors import Cancelled
    from ipft_web.kernel.view import KernelView
    if not KernelView.load().backend_works("kprobe"):
        pytest.skip("no kprobes on this kernel")
    seen, cancelled_at = [], []

    def progress(stage, done, total):
        if stage == "attaching":
            seen.append((done, total))
            if done >= 100 and not cancelled_at:
                cancelled_at.append(time.monotonic())
                t.cancel()
    t = Tracer(TraceConfig(mark=MARK, backend="kprobe"), lambda j: None, progress)
    with pytest.raises(Cancelled, match="stopped before tracing started"):
        t.start()
    print(f"\nstart cancelled at {seen[-1][0]} of {seen[-1][1]} functions: {time.monotonic() - cancelled_at[0]:.1f} s "
          f"from cancel() to the end of the detach")
    assert seen and seen[-1][0] < 110 < seen[-1][1], seen[-3:]
    assert t.stats()["state"] == "stopped" and not t.program.in_use
    assert not probe_fds() and not t.backend.fds


def test_lifecycle_tracepoints_attach_while_the_function_backend_does(monkeypatch):
    """The skb tracepoints go in from a thread during the function backend's attach (a kprobe-multi
    link is one system call: the wait is the kernel's), and a failure there reaches start()."""
    from ipft_web import backends
    from ipft_web.backends.tracepoint import TracepointBackend
    from ipft_web.kernel.view import KernelView

    holder = {}

    class Waiting:
        kind = "kprobe-multi"

        def attach(self, functions, progress=None):
            tp = holder["tracer"].tp_backend
            deadline = time.monotonic() + 60
            while len(tp.fds) < 2 and time.monotonic() < deadline:   # kfree_skb and consume_skb
                time.sleep(0.01)
            holder["tp_fds_during_attach"] = len(tp.fds)
            return backends.AttachResult(attached=[f.name for f in functions])

        def detach(self):
            pass

    monkeypatch.setattr(KernelView, "backends", lambda self: ["kprobe-multi", "tracepoint"])
    monkeypatch.setattr(KernelView, "backend_works", lambda self, b: True)
    monkeypatch.setattr(backends, "make", lambda name, bpf, kernel: Waiting())
    t = holder["tracer"] = Tracer(TraceConfig(mark=MARK, regex="^ip_rcv$", backend="kprobe-multi"), lambda j: None)
    t.start()
    try:
        assert holder["tp_fds_during_attach"] >= 2   # kfree_skb and consume_skb, at least
        assert {"skb:kfree_skb", "skb:consume_skb"} <= set(t.attached), t.attached
    finally:
        t.stop()

    def broken(self, slots, progress=None):
        raise RuntimeError("tracepoint attach broke (test)")

    monkeypatch.setattr(TracepointBackend, "attach", broken)
    t = holder["tracer"] = Tracer(TraceConfig(mark=MARK, regex="^ip_rcv$", backend="kprobe-multi"), lambda j: None)
    monkeypatch.setattr(backends, "make", lambda name, bpf, kernel: type("Quick", (), {
        "kind": "kprobe-multi", "detach": lambda self: None,
        "attach": lambda self, functions, progress=None: backends.AttachResult(attached=[f.name for f in functions])})())
    with pytest.raises(RuntimeError, match="broke"):
        t.start()
    assert not probe_fds()


def test_an_explicit_kprobe_multi_is_attached_without_its_probe(monkeypatch):
    """-b kprobe-multi: the attach is the probe (one link, all or nothing). The probe runs only to
    explain a failure, in the same words as before."""
    from ipft_web import backends
    from ipft_web.errors import EnvError
    from ipft_web.kernel.view import KernelView

    asked = []
    monkeypatch.setattr(KernelView, "backend_works", lambda self, b: asked.append(b) or b != "kprobe-multi")
    monkeypatch.setattr(KernelView, "why_not", lambda self, b: "no CONFIG_FPROBE (test)")
    attach = {"ok": True}

    class Link:
        kind = "kprobe-multi"

        def attach(self, functions, progress=None):
            if attach["ok"]:
                return backends.AttachResult(attached=[f.name for f in functions])
            raise EnvError("the kernel refused the kprobe-multi link: EOPNOTSUPP (test)")

        def detach(self):
            pass

    monkeypatch.setattr(backends, "make", lambda name, bpf, kernel: Link())
    t = Tracer(TraceConfig(mark=MARK, regex="^ip_rcv$", backend="kprobe-multi"), lambda j: None)
    t.start()
    try:
        assert "kprobe-multi" not in asked and t.stats()["backend"] == "kprobe-multi"
    finally:
        t.stop()
    attach["ok"] = False
    t = Tracer(TraceConfig(mark=MARK, regex="^ip_rcv$", backend="kprobe-multi"), lambda j: None)
    with pytest.raises(EnvError, match=r"backend kprobe-multi does not work on this kernel \(no CONFIG_FPROBE"):
        t.start()
    assert "kprobe-multi" in asked and not probe_fds()


def test_an_explicit_kprobe_multi_where_the_kernel_has_none():
    """-b kprobe-multi on a kernel without it (6.1 guest; the host): the attach fails, the probe
    explains it, nothing is left attached."""
    from ipft_web.errors import EnvError
    from ipft_web.kernel import features
    if features.have_kprobe_multi():
        pytest.skip("this kernel has kprobe-multi")
    t = Tracer(TraceConfig(mark=MARK, regex="^ip_rcv$", backend="kprobe-multi"), lambda j: None)
    with pytest.raises(EnvError, match="backend kprobe-multi does not work on this kernel"):
        t.start()
    assert not probe_fds()
