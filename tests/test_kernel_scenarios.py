"""Real-kernel scenarios for the `ipft` CLI.

Every packet is sent and marked inside throwaway network namespaces (their iptables tables go
with them); the tracer is global, so kprobes and tracepoints see every namespace.

guest (Debian 6.1 and 6.12 kernels under virtme-ng, kprobe backend): one `ipft -o json` session
with a mask traces all the scenarios below, each packet marked with its own low 16 bits, so the
BPF program is compiled once per module instead of once per scenario (30-130 s each in a guest):
  local ICMP, forwarding through a router namespace, an iptables DROP, IPv6 ping, TCP SYN,
  the mask itself (matching and non-matching marks). A second session checks an exact mark with
  text output and SIGTERM.
host (root, running kernel, tracepoint backend): a marked ping ends in skb:consume_skb, a dropped
one in skb:kfree_skb with a netfilter reason.
"""
from __future__ import annotations

import json
import select
import os
import subprocess
import sys
import threading
import time

import pytest

from ipft_testlib import IN_GUEST, funcs, ipft_argv, summarize_journeys

MASK = 0xFFFF0000
GUEST_MARK = 0x1234ABCD        # traced as -m 0x1234abcd --mask 0xffff0000: any 0x1234xxxx matches
HOST_MARK = 0x42420000

GUEST_FUNCS = (
    r"^(ip_rcv|ip_rcv_finish|ip_local_deliver|ip_forward|ip_forward_finish|ip_output|"
    r"icmp_rcv|icmp_echo|ipv6_rcv|ip6_rcv_finish|ip6_input|ip6_output|ip6_finish_output2?|"
    r"icmpv6_rcv|tcp_v4_rcv|tcp_v4_do_rcv|nf_hook_slow|kfree_skb_reason)$")

host_only = pytest.mark.skipif(IN_GUEST, reason="host kernel scenario (the guests test kprobes)")


def by_mark(mark):
    return lambda j: j.get("mark") == mark


def first_index(names, name):
    try:
        return names.index(name)
    except ValueError:
        raise AssertionError(f"{name} not in {names}") from None


# -- bad input: no root, no BPF needed ------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["-m", "0xnotanumber"],
    ["-m", "0x1ffffffff"],
    ["-m", "1", "--mask", "banana"],
    ["-m", "1", "-r", "(unclosed"],
    ["-m", "1", "-b", "carrier-pigeon"],
    ["-m", "1", "-o", "yaml"],
    ["-m", "1", "--duration", "-5"],
    ["-m", "1", "--duration", "nan"],
    ["-m", "1", "--idle-timeout", "1e9"],
    ["-m", "1", "--vmlinux", "/nonexistent/vmlinux"],
    ["-m", "1", "--mark-rule", "tx,icmp,dst=1.1.1.1;reboot"],
    ["-m", "1", "--mark-rule", "tx,icmp,dst=127.0.0.2\n-j ACCEPT"],
    ["-m", "1", "-r", "(a+)+$"],
    ["-l", "-r", "^(ip|tcp)*_rcv"],
    ["-m", "1", "--field", "skb->"],
])
def test_bad_input_is_one_line_and_exit_2(args):
    p = subprocess.run(ipft_argv() + args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "error" in lines[0] and "Traceback" not in p.stderr
    assert p.stdout == ""


# -- guest kernels: kprobes -----------------------------------------------------------------------


BCC_SMOKE = r"""
import sys
from bcc import BPF
b = BPF(text="BPF_ARRAY(hits, u64, 1); int kp(void *ctx) { hits.increment(0); return 0; }")
b.attach_kprobe(event="ip_rcv", fn_name="kp")
print("attached", flush=True)
sys.stdin.readline()
print(b["hits"][0].value, flush=True)
"""


@pytest.mark.guest
@pytest.mark.root
def test_bcc_kprobe_on_ip_rcv_counts_a_ping(netns, record_property):
    """BCC and kprobes themselves, without ipft: a 1-line program on ip_rcv sees a local ping."""
    ns = netns("smoke")
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", BCC_SMOKE], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "attached", p.stderr.read()[-3000:]
        record_property("bcc_compile_attach_s", round(time.monotonic() - t0, 1))
        ns.ping("127.0.0.1")
        out, err = p.communicate("\n", timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err[-3000:]
    assert int(out.strip()) >= 1, out


@pytest.fixture(scope="module")
def kprobe_session(module_ipft, record_testsuite_property):
    """One `ipft -b kprobe -o json` with a mask, shared by the scenarios of this module."""
    h = module_ipft("-m", hex(GUEST_MARK), "--mask", hex(MASK), "-b", "kprobe", "-o", "json",
                    "-r", GUEST_FUNCS)
    assert h.backend == "kprobe", h.stderr
    assert h.functions and h.functions >= 10, h.stderr
    record_testsuite_property("ipft_kprobe_ready_s", round(h.ready_after, 1))
    yield h
    res = h.stop()
    assert res.returncode == 0, res


@pytest.mark.guest
@pytest.mark.root
def test_list_shows_ip_rcv_with_its_skb_position():
    p = subprocess.run(ipft_argv() + ["-l", "-r", "^(ip_rcv|icmp_rcv)$"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = {ln.split()[0]: ln.split() for ln in p.stdout.splitlines() if ln.strip()}
    assert rows["ip_rcv"][1:] == ["vmlinux", "1"], p.stdout
    assert rows["icmp_rcv"][-1] == "1", p.stdout


@pytest.mark.guest
@pytest.mark.root
def test_local_icmp_goes_ip_rcv_icmp_rcv_icmp_echo(kprobe_session, netns):
    mark = 0x12340001
    ns = netns("icmp")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "1", "-d", "127.0.0.2", "-m", "comment",
                "--comment", "ipft-test", "-j", "MARK", "--set-mark", hex(mark))
    ns.ping("127.0.0.2")
    j = kprobe_session.wait_for(by_mark(mark), what=f"journey with mark {mark:#x}")
    names = funcs(j)
    assert first_index(names, "ip_rcv") < first_index(names, "icmp_rcv") < first_index(names, "icmp_echo"), names
    assert all(h["kind"] == "kprobe" for h in j["hits"] if not h["func"].startswith(("skb:", "net:")))
    t = j["tuple"]
    assert (t["family"], t["proto"], t["src"], t["dst"]) == ("ipv4", "icmp", "127.0.0.1", "127.0.0.2"), t
    assert (t["icmp_type"], t["icmp_code"]) == (8, 0), t
    assert j["dev"] == "lo"
    assert j["drop_reason"] is None, j
    ts = [h["t_ns"] for h in j["hits"]]
    assert ts[0] == 0 and ts == sorted(ts), ts


@pytest.mark.guest
@pytest.mark.root
def test_forwarded_packet_shows_ip_forward(kprobe_session, netns):
    """ns A -- router R (ip_forward=1, mark in raw PREROUTING) -- ns B: ping A -> B."""
    mark = 0x12340002
    a, r, b = netns("a"), netns("router"), netns("b")
    a_if, r_in = netns.veth(a, "10.200.1.2/24", r, "10.200.1.1/24")
    r_out, b_if = netns.veth(r, "10.200.2.1/24", b, "10.200.2.2/24")
    a.route("default", "via", "10.200.1.1")
    b.route("default", "via", "10.200.2.1")
    r.sysctl("net.ipv4.ip_forward", 1)
    # neighbours first (unmarked), so the marked packet is not parked in an ARP queue on the way
    r.ping("10.200.1.2")
    r.ping("10.200.2.2")
    r.iptables("-t", "raw", "-A", "PREROUTING", "-i", r_in, "-p", "1", "-d", "10.200.2.2",
               "-m", "comment", "--comment", "ipft-test", "-j", "MARK", "--set-mark", hex(mark))
    a.ping("10.200.2.2")
    j = kprobe_session.wait_for(lambda j: by_mark(mark)(j) and "ip_forward" in funcs(j),
                                what=f"journey with mark {mark:#x} through ip_forward")
    names = funcs(j)
    t = j["tuple"]
    assert (t["src"], t["dst"], t["proto"]) == ("10.200.1.2", "10.200.2.2", "icmp"), t
    # the journey is followed past the router although the mark is scrubbed on the way to B
    devs = {h["dev"] for h in j["hits"] if h.get("dev")}
    assert r_in in devs, devs


@pytest.mark.guest
@pytest.mark.root
def test_iptables_drop_names_netfilter(kprobe_session, netns):
    mark = 0x12340003
    ns = netns("drop")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "1", "-d", "127.0.0.3", "-m", "comment",
                "--comment", "ipft-test", "-j", "MARK", "--set-mark", hex(mark))
    ns.iptables("-t", "filter", "-A", "OUTPUT", "-m", "mark", "--mark", hex(mark), "-m", "comment",
                "--comment", "ipft-test", "-j", "DROP")
    p = ns.ping("127.0.0.3", check=False)
    assert p.returncode != 0, "the DROP rule let the ping through"
    j = kprobe_session.wait_for(lambda j: by_mark(mark)(j) and j.get("drop_reason"),
                                what=f"dropped journey with mark {mark:#x}")
    assert "NETFILTER" in j["drop_reason"], j["drop_reason"]
    assert j["end"] == "freed", j["end"]
    assert "skb:kfree_skb" in funcs(j), funcs(j)


@pytest.mark.guest
@pytest.mark.root
def test_ipv6_ping_goes_through_ipv6_functions(kprobe_session, netns):
    mark = 0x12340004
    ns = netns("v6")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "58", "-d", "::1", "-m", "comment",
                "--comment", "ipft-test", "-j", "MARK", "--set-mark", hex(mark), v6=True)
    ns.ping("::1")
    j = kprobe_session.wait_for(by_mark(mark), what=f"journey with mark {mark:#x}")
    names = funcs(j)
    assert "ipv6_rcv" in names or any(n.startswith("ip6_") for n in names), names
    assert not any(n in ("ip_rcv", "icmp_rcv") for n in names), names
    t = j["tuple"]
    assert (t["family"], t["proto"], t["src"], t["dst"]) == ("ipv6", "icmpv6", "::1", "::1"), t
    assert t["icmp_type"] == 128, t  # echo request


@pytest.mark.guest
@pytest.mark.root
def test_tcp_syn_has_tcp_tuple_with_dport(kprobe_session, netns):
    mark, port = 0x12340005, 18765
    ns = netns("tcp")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "tcp", "--syn", "-d", "127.0.0.1", "--dport", port,
                "-m", "comment", "--comment", "ipft-test", "-j", "MARK", "--set-mark", hex(mark))
    assert ns.tcp_connect("127.0.0.1", port, b"ipft") == "ipft"
    j = kprobe_session.wait_for(by_mark(mark), what=f"journey with mark {mark:#x}")
    t = j["tuple"]
    assert (t["family"], t["proto"], t["dst"], t["dport"]) == ("ipv4", "tcp", "127.0.0.1", port), t
    assert isinstance(t["sport"], int) and t["sport"] > 0, t
    assert "tcp_v4_rcv" in funcs(j), funcs(j)


@pytest.mark.guest
@pytest.mark.root
def test_mask_matches_only_the_masked_bits(kprobe_session, netns):
    seen, unseen = 0x1234FFFF, 0x4321ABCD   # same low 16 bits as GUEST_MARK: still not a match
    ns = netns("mask")
    for dst, mark in (("127.0.0.5", unseen), ("127.0.0.6", seen)):
        ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "1", "-d", dst, "-m", "comment",
                    "--comment", "ipft-test", "-j", "MARK", "--set-mark", hex(mark))
    ns.ping("127.0.0.5")   # first: by the time the second one's journey is out, this one's would be
    ns.ping("127.0.0.6")
    kprobe_session.wait_for(by_mark(seen), what=f"journey with mark {seen:#x}")
    time.sleep(3)
    wrong = [j for j in kprobe_session.journeys
             if j.get("mark") == unseen or (j.get("tuple") or {}).get("dst") == "127.0.0.5"]
    assert not wrong, summarize_journeys(wrong)


@pytest.mark.guest
@pytest.mark.root
def test_exact_mark_text_output_and_sigterm(ipft, netns):
    """Default mask: only 0xdeadbeef itself; text output; SIGTERM flushes and exits 0."""
    h = ipft("-m", "0xdeadbeef", "-b", "kprobe", "-r", r"^(ip_rcv|icmp_rcv|icmp_echo)$")
    assert h.backend == "kprobe" and h.functions >= 3, h.stderr
    ns = netns("exact")
    for dst, mark in (("127.0.0.4", 0xDEADBEEE), ("127.0.0.2", 0xDEADBEEF)):
        ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "1", "-d", dst, "-m", "comment",
                    "--comment", "ipft-test", "-j", "MARK", "--set-mark", hex(mark))
        ns.ping(dst)
    deadline = time.monotonic() + 60
    while "127.0.0.2" not in h.stdout and time.monotonic() < deadline:
        time.sleep(0.5)
    h.proc.terminate()
    res = h.stop()
    assert res.returncode == 0, res
    assert "127.0.0.2" in res.stdout and "127.0.0.4" not in res.stdout, res.stdout
    assert "0xdeadbeef" in res.stdout
    for name in ("ip_rcv", "icmp_rcv", "icmp_echo"):
        assert name in res.stdout
    assert "journeys" in res.stderr.splitlines()[-1], res.stderr


# -- host kernel: raw tracepoints -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tracepoint_session(module_ipft):
    h = module_ipft("-m", hex(HOST_MARK), "--mask", hex(MASK), "-b", "tracepoint", "-o", "json")
    assert h.backend == "tracepoint", h.stderr
    yield h
    res = h.stop()
    assert res.returncode == 0, res


@host_only
@pytest.mark.root
def test_host_marked_ping_ends_in_consume_skb(tracepoint_session, netns):
    mark = HOST_MARK | 1
    ns = netns("tp-ping")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "1", "-d", "127.0.0.2", "-m", "comment",
                "--comment", "ipft-test", "-j", "MARK", "--set-mark", hex(mark))
    ns.ping("127.0.0.2")
    j = tracepoint_session.wait_for(lambda j: by_mark(mark)(j) and j.get("end") == "freed",
                                    what=f"freed journey with mark {mark:#x}")
    names = funcs(j)
    assert any(n.startswith("net:") for n in names), names
    assert names[-1] == "skb:consume_skb", names
    assert all(h["kind"] == "tracepoint" for h in j["hits"])
    assert j["drop_reason"] is None
    assert (j["tuple"]["proto"], j["tuple"]["dst"]) == ("icmp", "127.0.0.2"), j["tuple"]


@host_only
@pytest.mark.root
def test_host_dropped_ping_has_kfree_skb_reason(tracepoint_session, netns):
    mark = HOST_MARK | 2
    ns = netns("tp-drop")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "1", "-d", "127.0.0.3", "-m", "comment",
                "--comment", "ipft-test", "-j", "MARK", "--set-mark", hex(mark))
    ns.iptables("-A", "OUTPUT", "-m", "mark", "--mark", hex(mark), "-m", "comment",
                "--comment", "ipft-test", "-j", "DROP")
    assert ns.ping("127.0.0.3", check=False).returncode != 0
    j = tracepoint_session.wait_for(lambda j: by_mark(mark)(j) and j.get("drop_reason"),
                                    what=f"dropped journey with mark {mark:#x}")
    assert "NETFILTER" in j["drop_reason"], j
    assert funcs(j)[-1] == "skb:kfree_skb", funcs(j)
    assert j["drop_func"], j


@host_only
@pytest.mark.root
def test_ctrl_c_while_starting_stops_at_once():
    """SIGINT during kernel introspection/compile: one line, exit 130, no traceback, no waiting."""
    # no program cache nor the shipped program: this start compiles (a couple of seconds), which is
    # what gets interrupted
    p = subprocess.Popen(ipft_argv() + ["-m", "1", "-b", "tracepoint"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, IPFT_CACHE_DIR="off", IPFT_PREBUILT="off"))
    time.sleep(1.0)
    assert p.poll() is None, p.communicate()
    p.send_signal(subprocess.signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    assert err.strip().splitlines()[-1] == "ipft: interrupted", err
    assert "Traceback" not in err and "tracing" not in err, err


@host_only
@pytest.mark.root
def test_reader_gone_ends_the_trace_quietly(netns):
    """`ipft -o json | head -1`: once the pipe is closed ipft detaches and exits 0 on its own."""
    mark = HOST_MARK | 3
    p = subprocess.Popen(ipft_argv() + ["-m", hex(mark), "-b", "tracepoint", "-o", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    err = []
    reader = threading.Thread(target=lambda: [err.append(line) for line in p.stderr], daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("tracing" in line for line in err) and time.monotonic() < deadline:
            assert p.poll() is None, "".join(err)
            time.sleep(0.2)
        ns = netns("tp-pipe")
        ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "1", "-d", "127.0.0.2", "-m", "comment",
                    "--comment", "ipft-test", "-j", "MARK", "--set-mark", hex(mark))
        while not select.select([p.stdout], [], [], 0.5)[0]:
            assert time.monotonic() < deadline, "".join(err)
            ns.ping("127.0.0.2")
        assert json.loads(p.stdout.readline())["mark"] == mark
        p.stdout.close()            # what `head -1` does after its line
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            ns.ping("127.0.0.2")
            time.sleep(0.5)
        assert p.wait(timeout=30) == 0, "".join(err)
    finally:
        if p.poll() is None:
            p.send_signal(subprocess.signal.SIGINT)
            p.wait(timeout=60)
    reader.join(timeout=10)
    text = "".join(err)
    assert "Traceback" not in text and "BrokenPipe" not in text, text
    assert "journeys" in err[-1], text
