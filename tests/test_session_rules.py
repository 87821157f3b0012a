"""Marking rules handed to a trace session (the dashboard's one-click "mark and trace"): made first,
given to the session by POST /api/sessions "mark_rules", removed when that session ends, and by
a live ipft-web on SIGTERM/SIGHUP. Real iptables, inside a throwaway network namespace."""
import json
import signal

import pytest

from ipft_testlib import IN_GUEST
from ipft_web.marks import listing
from ipft_web.marks.registry import REGISTRY
from test_marks_fixtures import needs_root_netns, netns  # noqa: F401 (fixture)
from web_fixtures import AUTH, Server, make_app, wait_for, wait_session_state

# iptables and the replay tracer: nothing here depends on the kernel, so the guests skip it
pytestmark = [needs_root_netns, pytest.mark.root,
              pytest.mark.skipif(IN_GUEST, reason="kernel-independent (runs on the host)")]


@pytest.fixture
def client(tmp_path, netns):
    app, _ = make_app(tmp_path, speed=1)
    app.config["IPFT_MARKS_NAMESPACES"] = [netns]
    try:
        yield app.test_client()
    finally:
        app.extensions["ipft_web"].sessions.shutdown()
        REGISTRY.remove_all()


def post(client, path, body):
    return client.post(path, data=json.dumps(body), headers=dict(AUTH, **{"Content-Type": "application/json"}))


def make_rule(client, netns):
    r = post(client, "/api/marks", {"proto": "icmp", "dst": "127.0.0.2", "mark": "0xdeadbeef", "netns": netns})
    assert r.status_code == 201, r.json
    return r.json["id"]


def test_a_rule_given_to_a_session_goes_when_it_ends(client, netns):
    rid = make_rule(client, netns)
    r = post(client, "/api/sessions", {"mark": "0xdeadbeef", "mark_rules": [rid]})
    assert r.status_code == 201, r.json
    sid = r.json["id"]
    assert REGISTRY.get(rid).session == str(sid)
    assert {t.rule_id for t in listing.list_tagged(netns)} == {rid}
    client.post(f"/api/sessions/{sid}/stop", headers=AUTH)
    wait_session_state(client, sid, ("stopped",))
    wait_for(lambda: REGISTRY.get(rid) is None, what="the session's rule removed")
    assert listing.list_tagged(netns) == []
    assert client.get("/api/marks", headers=AUTH).json["rules"] == []


@pytest.mark.parametrize("rules", [
    "abc", [1], ["nope"], ["0" * 8 + "-1-1"], [None], ["x"] * 17, {"id": "x"}, ["a\nb"],
])
def test_bad_mark_rules_start_nothing(client, netns, rules):
    rid = make_rule(client, netns)
    r = post(client, "/api/sessions", {"mark": 1, "mark_rules": rules})
    assert r.status_code == 400 and "\n" not in r.json["error"], r.json
    assert client.get("/api/sessions", headers=AUTH).json["sessions"] == []
    assert REGISTRY.get(rid).session is None


def test_a_rule_owned_by_one_session_cannot_be_given_to_another(client, netns):
    rid = make_rule(client, netns)
    sid = post(client, "/api/sessions", {"mark": "0xdeadbeef", "mark_rules": [rid]}).json["id"]
    client.post(f"/api/sessions/{sid}/stop", headers=AUTH)
    wait_session_state(client, sid, ("stopped",))
    rid2 = make_rule(client, netns)
    sid2 = post(client, "/api/sessions", {"mark": "0xdeadbeef", "mark_rules": [rid2]}).json["id"]
    r = post(client, "/api/sessions", {"mark": 1, "mark_rules": [rid2]})
    assert r.status_code == 400 and f"session {sid2}" in r.json["error"], r.json
    client.post(f"/api/sessions/{sid2}/stop", headers=AUTH)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_live_server_removes_its_rules_on_a_signal(tmp_path, netns, signum):
    """Closing the terminal that runs `sudo ipft-web` (SIGHUP) must not leave MARK rules behind."""
    srv = Server(tmp_path)
    try:
        status, rule = srv.post("/api/marks", {"proto": "icmp", "dst": "127.0.0.2", "mark": "0xdeadbeef",
                                               "netns": netns})
        assert status == 201, rule
        assert {t.rule_id for t in listing.list_tagged(netns)} == {rule["id"]}
        srv.proc.send_signal(signum)
        srv.proc.wait(timeout=30)
    finally:
        srv.stop()
    assert listing.list_tagged(netns) == [], srv.stderr()
    assert "Traceback" not in srv.stderr()
