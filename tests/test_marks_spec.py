"""Validation and rendering of marking rules (no root, nothing applied)."""
import pytest

from ipft_web.errors import UsageError
from ipft_web.marks import render
from ipft_web.marks.cli import parse_rule_text
from ipft_web.marks.spec import parse_spec

BASE = {"proto": "icmp", "dst": "127.0.0.2", "mark": "0xdeadbeef"}


def spec(**kw):
    d = dict(BASE)
    d.update(kw)
    return parse_spec({k: v for k, v in d.items() if v is not ...})


def test_defaults_and_narrowing():
    s = spec()
    assert (s.direction, s.family, s.proto, s.mark, s.mask, s.tool) == ("both", "ipv4", "icmp", 0xDEADBEEF,
                                                                          0xFFFFFFFF, "auto")
    assert s.chains == ("PREROUTING", "OUTPUT")
    assert spec(dst="::1", proto="icmpv6").family == "ipv6"
    assert spec(dst=None, proto="tcp").family == "both"
    assert spec(dst="2001:db8::/32", proto="udp", family="ipv6").family == "ipv6"
    assert spec(iif="eth0").direction == "rx"
    assert spec(oif="veth-a.1").direction == "tx"


def test_mark_default_from_session_and_mask():
    s = parse_spec({"proto": "tcp"}, default_mark=0x1234, default_mask=0xFF00)
    assert (s.mark, s.mask) == (0x1200, 0xFF00)
    with pytest.raises(UsageError, match="mark is required"):
        parse_spec({"proto": "tcp"})


@pytest.mark.parametrize("field,value", [
    ("src", "1.1.1.1; reboot"), ("dst", "1.1.1.1 --jump ACCEPT"), ("dst", "--jump"), ("dst", "127.0.0.2\n"),
    ("dst", "127.0.0.2\n-A OUTPUT -j DROP"), ("dst", "１２７.0.0.1"), ("dst", "127.0.0.\u0662"),
    ("dst", "10.0.0.1/24"), ("dst", "10.0.0.0/33"), ("dst", "fe80::1%eth0"), ("dst", "256.1.1.1"),
    ("dst", "localhost"), ("dst", 2130706434), ("dst", ["127.0.0.2"]), ("dst", "1" * 100),
    ("sport", "70000"), ("sport", "-1"), ("sport", "90-80"), ("sport", "80,443"), ("sport", True),
    ("sport", "８0"), ("sport", 1.5), ("dport", "1:2:3"), ("dport", "0x50"),
    ("iif", "-j"), ("iif", "--jump"), ("iif", "eth0 -j ACCEPT"), ("iif", "a" * 16), ("iif", ".."),
    ("iif", "eth0\u200b"), ("iif", "eth/0"), ("iif", "eth0:1"), ("iif", "e\tth0"), ("oif", "lo;reboot"),
    ("proto", "sctp"), ("proto", "tcp\u00a0"), ("proto", "TCP\n"), ("proto", "ｔcp"), ("proto", 6),
    ("direction", "in"), ("direction", "rx;tx"), ("family", "inet"), ("family", "ipv4\x00"),
    ("mark", "0xdeadbeef; reboot"), ("mark", "-1"), ("mark", "0x1ffffffff"), ("mark", "0"), ("mark", True),
    ("mask", "0"), ("mask", "0xff\n"), ("rate", "0"), ("rate", "10001"), ("rate", "5/fortnight"),
    ("rate", "5/second --limit-burst 99"), ("rate", -3), ("rate", "１0"), ("tool", "iptables-legacy"),
    ("tool", "/bin/sh"), ("netns", "../../proc/1/ns/net"), ("netns", "-x"), ("netns", "a b"),
    ("netns", "ipft-no-such-ns-xyz"), ("bogus", "1"), ("mark", {"a": 1}),
])
def test_hostile_fields_refused(field, value):
    with pytest.raises(UsageError):
        spec(**{field: value})


@pytest.mark.parametrize("kw,msg", [
    ({"proto": "udp", "dport": "53", "dst": "::1"}, None),
    ({"proto": "icmp", "dst": "::1"}, "contradicts"),
    ({"proto": "icmpv6", "family": "ipv4", "dst": None}, "contradicts"),
    ({"src": "10.0.0.1", "dst": "::1", "proto": "any"}, "contradicts"),
    ({"family": "ipv6"}, "contradicts"),
    ({"proto": "icmp", "dport": "80"}, "need proto tcp or udp"),
    ({"iif": "eth0", "direction": "tx"}, "direction to rx"),
    ({"oif": "eth0", "direction": "rx"}, "direction to tx"),
    ({"iif": "eth0", "oif": "eth1"}, "cannot have both"),
    ({"proto": "any", "dst": None}, "every packet"),
    ({"proto": "any", "dst": "0.0.0.0/0"}, "every packet"),
    ({"proto": "any", "dst": None, "rate": "10"}, None),
])
def test_combinations(kw, msg):
    if msg is None:
        spec(**kw)
    else:
        with pytest.raises(UsageError, match=msg):
            spec(**kw)


def test_error_is_one_line():
    with pytest.raises(UsageError) as ei:
        spec(dst="1.1.1.1\n--jump ACCEPT\r\n")
    assert "\n" not in str(ei.value) and "\r" not in str(ei.value)


def test_netns_must_exist(tmp_path):
    (tmp_path / "blue").write_text("")
    assert parse_spec(dict(BASE, netns="blue"), netns_dir=str(tmp_path)).netns == "blue"
    with pytest.raises(UsageError, match="does not exist"):
        parse_spec(dict(BASE, netns="red"), netns_dir=str(tmp_path))


def test_render_iptables_exact():
    s = spec(direction="tx", rate="5", mask="0xffff0000", mark="0xbeef0000")
    cmds = render.render(s, "0123abcd-42-777", "iptables")
    assert [c.text for c in cmds] == [
        "iptables -t raw -A OUTPUT -p icmp -d 127.0.0.2 -m limit --limit 5/second -m comment --comment "
        "ipft-web:0123abcd-42-777 -j MARK --set-xmark 0xbeef0000/0xffff0000"]
    s6 = spec(dst="2001:db8::/64", proto="tcp", sport="1000-2000", dport=443, iif="veth0", netns=...)
    texts = [c.text for c in render.render(s6, "0123abcd-42-777", "iptables")]
    assert texts == ["ip6tables -t raw -A PREROUTING -p tcp -d 2001:db8::/64 -i veth0 --sport 1000:2000 "
                     "--dport 443 -m comment --comment ipft-web:0123abcd-42-777 -j MARK --set-xmark "
                     "0xdeadbeef/0xffffffff"]


def test_render_iptables_both_families_and_hooks():
    s = spec(proto="udp", dst=None, dport="53")
    cmds = render.render(s, "0123abcd-42-777", "iptables")
    assert [(c.tool, c.argv[4]) for c in cmds] == [("iptables", "PREROUTING"), ("iptables", "OUTPUT"),
                                                  ("ip6tables", "PREROUTING"), ("ip6tables", "OUTPUT")]


def test_render_nft_exact():
    s = spec(direction="tx", mask="0xff", mark="0x12345678", rate="10/minute")
    texts = [c.text for c in render.render(s, "0123abcd-42-777", "nft")]
    assert texts == [
        "nft add table inet ipft_web",
        "nft add chain inet ipft_web output '{ type filter hook output priority raw; policy accept; }'",
        "nft add rule inet ipft_web output meta nfproto ipv4 ip daddr 127.0.0.2 meta l4proto icmp "
        "limit rate 10/minute meta mark set meta mark and 0xffffff00 or 0x00000078 "
        "comment '\"ipft-web:0123abcd-42-777\"'"]
    both = render.render(spec(proto="tcp", dst=None, dport="80-90", direction="rx"), "0123abcd-42-777", "nft")
    assert both[-1].text.endswith("meta l4proto tcp tcp dport 80-90 meta mark set 0xdeadbeef "
                                  "comment '\"ipft-web:0123abcd-42-777\"'")
    assert "nfproto" not in both[-1].text


def test_render_netns_prefix(tmp_path):
    (tmp_path / "blue").write_text("")
    s = parse_spec(dict(BASE, netns="blue"), netns_dir=str(tmp_path))
    for c in render.render(s, "0123abcd-42-777", "nft"):
        assert c.argv[:4] == ("ip", "netns", "exec", "blue")


def test_render_refuses_bad_id():
    with pytest.raises(ValueError):
        render.render(spec(), "x; reboot", "iptables")


def test_cli_rule_text():
    assert parse_rule_text("tx,icmp,dst=127.0.0.2") == {"direction": "tx", "proto": "icmp", "dst": "127.0.0.2"}
    assert parse_rule_text("rx, TCP ,dport=443,iif=eth0,rate=100,tool=nft,ipv4") == {
        "direction": "rx", "proto": "tcp", "dport": "443", "iif": "eth0", "rate": "100", "tool": "nft",
        "family": "ipv4"}
    for bad in ["", "tx,,icmp", "both", "mark=0x1", "tx,rx", "jump=ACCEPT", "icmp;reboot", "x" * 600,
                "dst=1.1.1.1,dst=2.2.2.2"]:
        with pytest.raises(UsageError):
            parse_rule_text(bad)
    # the value still goes through parse_spec
    with pytest.raises(UsageError):
        parse_spec(parse_rule_text("tx,icmp,dst=1.1.1.1 -j ACCEPT"), default_mark=1)
