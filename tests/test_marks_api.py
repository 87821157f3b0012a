"""/api/marks through Flask's test client; every rule goes into a throwaway network namespace."""
import json

import pytest
from flask import Flask

from ipft_web.marks import api, listing
from ipft_web.marks.registry import REGISTRY
from test_marks_fixtures import needs_root_netns, netns, snapshot  # noqa: F401 (fixture)

pytestmark = needs_root_netns


@pytest.fixture
def client(netns):
    app = Flask(__name__)
    app.config["IPFT_MARKS_NAMESPACES"] = [netns]       # leftovers: only ever look in the test namespace
    app.register_blueprint(api.bp)
    try:
        yield app.test_client()
    finally:
        REGISTRY.remove_all()


def post(client, body, path="/api/marks"):
    return client.post(path, data=json.dumps(body), content_type="application/json")


HOSTILE = [
    {"dst": "1.1.1.1; reboot"}, {"dst": "127.0.0.2 --jump ACCEPT"}, {"dst": "--jump ACCEPT"},
    {"dst": "127.0.0.2\n-A OUTPUT -j DROP"}, {"dst": "127.0.0.2\r\n"}, {"src": "１.１.１.１"},
    {"src": "127.0.0.1\u200b"}, {"iif": "eth0 -j ACCEPT"}, {"iif": "-j", "direction": "rx"},
    {"oif": "lo\n", "direction": "tx"}, {"proto": "icmp -j ACCEPT"}, {"proto": "all"}, {"sport": "22;ls"},
    {"dport": "65536", "proto": "tcp"}, {"dport": "80 -j DROP", "proto": "tcp"}, {"rate": "5/second -j DROP"},
    {"mark": "0xdeadbeef -j ACCEPT"}, {"mark": "0x1\n"}, {"mark": 2 ** 32}, {"mask": 0}, {"tool": "sh"},
    {"netns": "../../../proc/1/ns/net"}, {"netns": "x; reboot"}, {"family": "ipv6"},
    {"jump": "ACCEPT"}, {"direction": ["rx"]}, {"session": "a b"}, {"session": "x" * 65},
]


@pytest.mark.parametrize("extra", HOSTILE)
def test_hostile_bodies_change_nothing(client, netns, extra):
    before = snapshot(netns)
    body = {"proto": "icmp", "dst": "127.0.0.2", "mark": "0xdeadbeef", "netns": netns}
    body.update(extra)
    r = post(client, body)
    assert r.status_code == 400, r.get_json()
    err = r.get_json()["error"]
    assert isinstance(err, str) and "\n" not in err and "Traceback" not in err
    assert snapshot(netns) == before
    assert REGISTRY.list() == []


# every body names the test namespace, so even a wrongly accepted one could only touch that
MALFORMED = [
    ("not json", "application/json"), ("[1,2]", "application/json"), ('"x"', "application/json"),
    ("null", "application/json"), ('{"proto":"icmp","mark":1,"netns":"NS"}', "text/plain"),
    ("proto=icmp&mark=1&netns=NS", "application/x-www-form-urlencoded"),
    ('{"proto":"icmp","mark":1,"netns":"NS","src":"' + "1" * 5000 + '"}', "application/json"),
    (b'{"proto":"icmp","mark":1,"netns":"NS","dst":"\xff\xfe"}', "application/json"),
    ('{"proto":"icmp","mark":1,"mark":2,"netns":"NS"}', "application/json"),
    ('{"proto":"icmp","mark":NaN,"netns":"NS"}', "application/json"),
    ('{"proto":"icmp","mark":1e400,"netns":"NS"}', "application/json"),
    ('{"proto":"icmp","mark":1,"netns":"NS","dst":' + "[" * 1500 + "]" * 1500 + "}", "application/json"),
    ('{"proto":"icmp","mark":1,"netns":"NS","dst":"\\ud800"}', "application/json"),
    ('{"proto":"icmp","mark":1,"netns":"NS"} trailing', "application/json"),
]


@pytest.mark.parametrize("data,ctype", MALFORMED)
def test_malformed_requests(client, netns, data, ctype):
    before = snapshot(netns)
    data = data.replace(b"NS", netns.encode()) if isinstance(data, bytes) else data.replace("NS", netns)
    r = client.post("/api/marks", data=data, content_type=ctype)
    assert r.status_code == 400 and "error" in r.get_json(), r.data[:300]
    assert snapshot(netns) == before and REGISTRY.list() == []


def test_well_formed_body_for_the_malformed_cases(client, netns):
    """The same shape without the defect is accepted (so the 400s above are about the defect)."""
    r = client.post("/api/marks", data='{"proto":"icmp","mark":1,"netns":"%s"}' % netns,
                    content_type="application/json")
    assert r.status_code == 201, r.get_json()


@pytest.mark.parametrize("tool", ["iptables", "nft", "auto"])
def test_create_list_delete(client, netns, tool):
    before = snapshot(netns)
    r = post(client, {"direction": "tx", "proto": "icmp", "dst": "127.0.0.2", "mark": "0xdeadbeef",
                      "netns": netns, "tool": tool, "session": "sess-1"})
    assert r.status_code == 201, r.get_json()
    rule = r.get_json()
    assert rule["tool"] == ("iptables" if tool == "auto" else tool)
    assert rule["commands"][-1].startswith(f"ip netns exec {netns} ")
    assert f"ipft-web:{rule['id']}" in rule["commands"][-1]
    assert rule["spec"]["family"] == "ipv4" and rule["spec"]["mark"] == "0xdeadbeef"
    assert rule["session"] == "sess-1" and rule["remove_commands"]
    assert {t.rule_id for t in listing.list_tagged(netns)} == {rule["id"]}

    listed = client.get("/api/marks").get_json()
    assert [x["id"] for x in listed["rules"]] == [rule["id"]]
    assert netns in listed["netns"] and listed["tools"]["nft"] is True
    assert client.get("/api/marks/leftovers").get_json() == {"leftovers": []}

    r = client.delete(f"/api/marks/{rule['id']}")
    assert r.status_code == 200 and r.get_json()["removed"] is True
    assert listing.list_tagged(netns) == []
    assert client.get("/api/marks").get_json()["rules"] == []
    assert client.delete(f"/api/marks/{rule['id']}").status_code == 404
    if tool == "nft":
        assert snapshot(netns) == before


def test_delete_bad_ids(client):
    for bad in ["x", "1;reboot", "ffffffff-1-1%0a", "ffffffff-1-1%20-j%20ACCEPT", "%EF%BC%91"]:
        r = client.delete(f"/api/marks/{bad}")
        assert r.status_code == 400 and "error" in r.get_json()
    assert client.delete("/api/marks/..%2F..").status_code == 404     # not routed to the blueprint
    assert client.delete("/api/marks/0123abcd-1-1").status_code == 404


def test_preview_applies_nothing(client, netns):
    before = snapshot(netns)
    r = post(client, {"proto": "tcp", "dport": "443", "mark": "0x10", "mask": "0xff", "netns": netns,
                      "tool": "nft"}, path="/api/marks/preview")
    assert r.status_code == 200
    body = r.get_json()
    assert body["tool"] == "nft" and body["commands"][0] == f"ip netns exec {netns} nft add table inet ipft_web"
    assert "meta mark set meta mark and 0xffffff00 or 0x00000010" in body["commands"][-1]
    assert snapshot(netns) == before and REGISTRY.list() == []


def test_default_mark_from_session(netns):
    app = Flask(__name__)
    app.config["IPFT_MARKS_DEFAULT"] = lambda session: (0xC0FFEE00, 0xFFFFFF00) if session == "s9" else None
    app.register_blueprint(api.bp)
    c = app.test_client()
    try:
        assert post(c, {"proto": "icmp", "netns": netns}).status_code == 400       # no mark, no session
        r = post(c, {"proto": "icmp", "netns": netns, "session": "s9"})
        assert r.status_code == 201 and r.get_json()["spec"]["mark"] == "0xc0ffee00"
        assert c.get("/api/marks?session=s9").get_json()["default"] == {"mark": "0xc0ffee00", "mask": "0xffffff00"}
        REGISTRY.remove_session("s9")
        assert listing.list_tagged(netns) == [] and REGISTRY.list() == []
    finally:
        REGISTRY.remove_all()


def test_leftovers_endpoints(client, netns):
    from ipft_web.marks import apply
    from ipft_web.marks.spec import parse_spec

    orphan = apply.apply(parse_spec({"proto": "icmp", "mark": 3, "netns": netns, "tool": "nft"}))  # not registered
    left = client.get("/api/marks/leftovers").get_json()["leftovers"]
    assert [x["id"] for x in left] == [orphan.id, orphan.id]
    assert left[0]["remove_command"].startswith(f"ip netns exec {netns} nft delete rule inet ipft_web")
    r = client.delete("/api/marks/leftovers")
    assert r.status_code == 200 and len(r.get_json()["removed"]) == 3
    assert listing.list_tagged(netns) == []


def test_env_errors_are_409(client, netns, monkeypatch):
    from ipft_web.marks import runner

    real = runner.which
    monkeypatch.setattr(runner, "which", lambda name: None if name == "nft" else real(name))
    r = post(client, {"proto": "icmp", "mark": 1, "netns": netns, "tool": "nft"})
    assert r.status_code == 409 and "nft not found" in r.get_json()["error"]
