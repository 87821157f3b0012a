"""Real iptables/ip6tables/nft inside a throwaway network namespace: apply, mark real packets, remove,
roll back, find what a SIGKILLed owner left behind, clean up on SIGTERM/SIGINT."""
import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ipft_web.errors import EnvError, UsageError
from ipft_web.marks import apply, cleanup, listing, render
from ipft_web.marks.cli import add_arguments, applied_rules
from ipft_web.marks.registry import Registry
from ipft_web.marks.spec import parse_spec
from test_marks_fixtures import needs_root_netns, netns, sh, snapshot  # noqa: F401 (fixture)

pytestmark = needs_root_netns
TOOLS = ["iptables", "nft"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tagged(ns, rule_id=None):
    return [t for t in listing.list_tagged(ns) if rule_id is None or t.rule_id == rule_id]


@pytest.mark.parametrize("tool", TOOLS)
def test_apply_and_remove(netns, tool):
    before = snapshot(netns)
    spec = parse_spec({"proto": "udp", "dport": "5000-5010", "rate": "50", "mark": "0x00ab0000",
                       "mask": "0x00ff0000", "netns": netns, "tool": tool})
    rule = apply.apply(spec)
    assert rule.tool == tool
    found = tagged(netns, rule.id)
    # iptables: one rule per family and hook; nft: one per hook (inet covers both families)
    assert len(found) == (4 if tool == "iptables" else 2)
    assert {t.chain.upper() for t in found} == {"PREROUTING", "OUTPUT"}
    assert len(rule.remove_commands) == len(found)
    state = snapshot(netns)
    assert f"ipft-web:{rule.id}" in state
    if tool == "nft":
        assert "table inet ipft_web" in state
    # the commands shown are the commands that ran
    assert all(c.argv[:4] == ("ip", "netns", "exec", netns) for c in rule.commands)

    done = apply.remove(rule)
    assert len(done) >= len(found)
    assert tagged(netns) == []
    after = snapshot(netns)
    assert "ipft-web" not in after
    if tool == "nft":
        assert after == before, "table inet ipft_web must be deleted once empty"
    assert apply.remove(rule) == []     # removing twice is harmless


def test_nft_table_kept_while_other_rules_remain(netns):
    a = apply.apply(parse_spec({"proto": "icmp", "mark": 1, "netns": netns, "tool": "nft"}))
    b = apply.apply(parse_spec({"proto": "tcp", "mark": 2, "netns": netns, "tool": "nft"}))
    apply.remove(a)
    assert "table inet ipft_web" in snapshot(netns)
    assert [t.rule_id for t in tagged(netns)] == [b.id, b.id]
    apply.remove(b)
    assert "ipft_web" not in snapshot(netns)


def _count_marked(ns, mark):
    """A counter (in the test namespace) of packets leaving with `mark`, read after the traffic."""
    p = sh("nft", "list", "chain", "ip", "ipftcount", "post", ns=ns)
    for line in p.stdout.splitlines():
        if f"meta mark {mark:#010x}" in line and "counter packets" in line:
            return int(line.split("counter packets")[1].split()[0])
    raise AssertionError(p.stdout)


@pytest.mark.parametrize("tool", TOOLS)
def test_rule_marks_real_packets(netns, tool):
    sh("nft", "add", "table", "ip", "ipftcount", ns=netns)
    sh("nft", "add", "chain", "ip", "ipftcount", "post", "{ type filter hook postrouting priority 0; }", ns=netns)
    sh("nft", "add", "rule", "ip", "ipftcount", "post", "meta", "mark", "0xdeadbeef", "counter", ns=netns)
    rule = apply.apply(parse_spec({"direction": "tx", "proto": "icmp", "dst": "127.0.0.2", "mark": "0xdeadbeef",
                                   "netns": netns, "tool": tool}))
    sh("ping", "-c", "3", "-i", "0.05", "-W", "1", "127.0.0.2", ns=netns)
    sh("ping", "-c", "2", "-i", "0.05", "-W", "1", "127.0.0.3", ns=netns)   # not matched
    assert _count_marked(netns, 0xDEADBEEF) == 3
    apply.remove(rule)
    sh("ping", "-c", "2", "-i", "0.05", "-W", "1", "127.0.0.2", ns=netns)
    assert _count_marked(netns, 0xDEADBEEF) == 3


@pytest.mark.parametrize("tool", TOOLS)
def test_rate_limit(netns, tool):
    sh("nft", "add", "table", "ip", "ipftcount", ns=netns)
    sh("nft", "add", "chain", "ip", "ipftcount", "post", "{ type filter hook postrouting priority 0; }", ns=netns)
    sh("nft", "add", "rule", "ip", "ipftcount", "post", "meta", "mark", "0x00000007", "counter", ns=netns)
    rule = apply.apply(parse_spec({"direction": "tx", "proto": "icmp", "dst": "127.0.0.2", "mark": 7,
                                   "rate": "1/minute", "netns": netns, "tool": tool}))
    sh("ping", "-c", "12", "-i", "0.01", "-W", "1", "127.0.0.2", ns=netns)
    n = _count_marked(netns, 7)
    assert 1 <= n <= 6, n          # the default burst (5) and then 1/minute
    apply.remove(rule)


def test_failed_apply_rolls_back(netns, monkeypatch):
    before = snapshot(netns)
    spec = parse_spec({"proto": "icmp", "mark": 9, "netns": netns, "tool": "iptables"})
    real = render.render

    def with_a_failing_last_command(spec, rule_id, tool):
        cmds = real(spec, rule_id, tool)
        bad = ("ip", "netns", "exec", netns, "iptables", "-t", "raw", "-A", "NO_SUCH_CHAIN", "-j", "ACCEPT")
        return cmds + [render.Command(bad, "iptables")]

    monkeypatch.setattr(apply, "render", with_a_failing_last_command)
    with pytest.raises(EnvError, match="NO_SUCH_CHAIN"):
        apply.apply(spec)
    assert tagged(netns) == []
    assert "ipft-web" not in snapshot(netns)
    assert snapshot(netns).count("-A ") == before.count("-A ")


def test_this_namespace_path_in_a_child(netns):
    """Without `netns` a rule goes into the caller's own namespace (here: a child run in the test one)."""
    code = textwrap.dedent("""
        from ipft_web.marks import apply, listing
        from ipft_web.marks.spec import parse_spec
        r = apply.apply(parse_spec({"proto": "icmp", "dst": "127.0.0.2", "mark": 5, "tool": "iptables"}))
        print(r.commands[0].text)
        print(len(listing.list_tagged(None)))
        print(len(apply.remove(r)), len(listing.list_tagged(None)))
    """)
    p = sh(sys.executable, "-c", code, ns=netns, cwd=ROOT)
    first, n, after = p.stdout.splitlines()
    assert first.startswith("iptables -t raw -A PREROUTING -p icmp -d 127.0.0.2 -m comment --comment ipft-web:")
    assert n == "2" and after == "2 0"
    assert "ipft-web" not in snapshot(netns)


OWNER = textwrap.dedent("""
    import sys, time
    from ipft_web.marks.registry import REGISTRY, install_exit_handlers
    from ipft_web.marks.spec import parse_spec
    install_exit_handlers()
    for tool in ("iptables", "nft"):
        REGISTRY.add(parse_spec({"proto": "icmp", "mark": 3, "netns": sys.argv[1], "tool": tool}))
    print("ready", flush=True)
    time.sleep(60)
""")


def _start_owner(ns):
    p = subprocess.Popen([sys.executable, "-c", OWNER, ns], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready", p.stderr.read()
    return p


def test_leftovers_after_sigkill(netns):
    p = _start_owner(netns)
    try:
        assert len(tagged(netns)) == 4
        assert cleanup.find_leftovers([netns]) == []          # its owner still runs
    finally:
        p.kill()
        p.wait()
    left = cleanup.find_leftovers([netns])
    assert len(left) == 4 and {t.tool for t in left} >= {"nft"}
    assert "left behind" in cleanup.leftover_warning([netns])
    out = io.StringIO()
    assert cleanup.run_cleanup(out, namespaces=[netns]) == 0   # what `ipft-web --cleanup` runs
    lines = out.getvalue().splitlines()
    assert sum(x.startswith("left behind (netns ") for x in lines) == 4
    assert sum(x.startswith("removed: ") for x in lines) == 5   # 4 rules + the emptied nft table
    assert tagged(netns) == [] and "ipft-web" not in snapshot(netns)
    assert cleanup.find_leftovers([netns]) == [] and cleanup.leftover_warning([netns]) is None
    out = io.StringIO()
    assert cleanup.run_cleanup(out, namespaces=[netns]) == 0
    assert out.getvalue() == "no ipft-web marking rules left behind\n"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_removed_on_signal(netns, signum):
    p = _start_owner(netns)
    assert len(tagged(netns)) == 4
    p.send_signal(signum)
    p.wait(timeout=30)
    assert tagged(netns) == [] and "ipft-web" not in snapshot(netns)


def test_own_rules_are_not_leftovers_unless_forgotten(netns):
    reg = Registry()
    rule = reg.add(parse_spec({"proto": "icmp", "mark": 3, "netns": netns, "tool": "nft"}))
    assert cleanup.find_leftovers([netns], registry=reg) == []
    forgotten = apply.apply(parse_spec({"proto": "tcp", "mark": 4, "netns": netns, "tool": "iptables"}))
    assert {t.rule_id for t in cleanup.find_leftovers([netns], registry=reg)} == {forgotten.id}
    cleanup.remove_leftovers([netns], registry=reg)
    assert [t.rule_id for t in tagged(netns)] == [rule.id, rule.id]
    reg.remove_all()
    assert tagged(netns) == []


def test_registry_sessions_and_limit(netns):
    reg = Registry(max_rules=2)
    a = reg.add(parse_spec({"proto": "icmp", "mark": 3, "netns": netns}), session="s1")
    reg.add(parse_spec({"proto": "tcp", "mark": 3, "netns": netns}), session="s2")
    with pytest.raises(EnvError, match="active already"):
        reg.add(parse_spec({"proto": "udp", "mark": 3, "netns": netns}))
    reg.remove_session("s2")
    assert [r.id for r in reg.list()] == [a.id] and {t.rule_id for t in tagged(netns)} == {a.id}
    reg.remove_all()
    assert reg.list() == [] and tagged(netns) == []


def _args(*rules):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args([x for r in rules for x in ("--mark-rule", r)])


def test_cli_applied_rules(netns):
    lines = []
    args = _args(f"tx,icmp,dst=127.0.0.2,netns={netns}", f"rx,tcp,dport=22,iif=veth0,tool=nft,netns={netns}")
    rules = applied_rules(args, 0xDEADBEEF, 0xFFFFFFFF, log=lines.append)
    assert tagged(netns) == []                      # validated only
    with pytest.raises(RuntimeError):
        with rules as applied:
            assert len(applied) == 2 and len(tagged(netns)) == 2
            raise RuntimeError("the trace failed")
    assert tagged(netns) == [] and "ipft-web" not in snapshot(netns)
    assert any(x.startswith("applied: ip netns exec") for x in lines)
    assert any(x.startswith("removed: ip netns exec") for x in lines)
    assert _args().mark_rules is None
    with applied_rules(_args(), 1, 1) as applied:   # no --mark-rule: nothing to do
        assert applied == []


@pytest.mark.parametrize("rule", ["tx,icmp,dst=1.1.1.1; reboot", "tx,icmp,dst=127.0.0.2,iif=--jump",
                                  "tx,icmp,dst=127.0.0.2\n-j ACCEPT", "tx,icmp,oif=eth0 -j ACCEPT",
                                  "icmp,mark=0x1", "icmp,rate=0", "icmp,netns=no-such-ns-ipft"])
def test_cli_refuses_before_anything(netns, rule):
    before = snapshot(netns)
    good = f"tx,icmp,dst=127.0.0.2,netns={netns}"
    with pytest.raises(UsageError):
        applied_rules(_args(good, rule + f",netns={netns}" if "netns=" not in rule else rule), 1, 0xFFFFFFFF)
    assert snapshot(netns) == before


def test_vanished_netns_is_not_an_error(netns):
    from test_marks_fixtures import delete_netns, make_netns
    ns = make_netns()
    rule = apply.apply(parse_spec({"proto": "icmp", "mark": 3, "netns": ns}))
    delete_netns(ns)
    assert apply.remove(rule) == []
    assert listing.list_tagged(ns) == []


def test_hand_made_and_legacy_rules_are_found(netns):
    """Rules typed by hand from a preview (owner pid 0), in the legacy tables too, are leftovers."""
    if not shutil.which("iptables-legacy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
        pytest.skip("no iptables-legacy")
    sh("iptables-legacy", "-t", "raw", "-A", "OUTPUT", "-p", "icmp", "-m", "comment", "--comment",
       "ipft-web:0123abcd-0-0", "-j", "MARK", "--set-xmark", "0x1/0xffffffff", ns=netns)
    _, cmds = apply.preview(parse_spec({"proto": "tcp", "mark": 2, "netns": netns, "tool": "nft"}))
    for c in cmds:
        sh(*c.argv)
    left = cleanup.find_leftovers([netns])
    assert sorted(t.tool for t in left) == ["iptables-legacy", "nft", "nft"]   # nft: one per hook
    cleanup.remove_leftovers([netns])
    assert tagged(netns) == []
    assert "ipft-web" not in sh("iptables-legacy-save", ns=netns).stdout
