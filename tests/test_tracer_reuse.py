"""The tracer in-process on the running kernel: compile once, trace twice, undo everything.

Root tests: on the host they use the tracepoint backend (the only one it allows); in a guest,
whatever `auto` picks.
"""
import time

import pytest

from ipft_web import program
from ipft_web.config import TraceConfig
from ipft_web.tracer import Tracer

pytestmark = pytest.mark.root
MARK = 0x5E55


def session(ns, regex):
    out = []
    t = Tracer(TraceConfig(mark=MARK, regex=regex, idle_timeout=0.5), out.append)
    t.start()
    try:
        ns.ping("127.0.0.1", count=2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any((j["tuple"] or {}).get("icmp_type") == 8 for j in out):
            t.poll(100)
    finally:
        t.stop()
    return t, out


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
    # every probe is gone: nothing left in BCC's tables, no perf/link fds kept by the backends
    bpf = t2.program.bpf
    assert not bpf.raw_tracepoint_fds and not t2.program.in_use
    assert not getattr(t2.backend, "fds", []) and not getattr(t2.backend, "links", [])


def test_start_failure_releases_the_program():
    t = Tracer(TraceConfig(mark=MARK, regex=r"^no_such_function_anywhere$"), lambda j: None)
    with pytest.raises(Exception):
        t.start()
    prog = program._compiled.get((None, False))
    assert prog is None or not prog.in_use
