"""The HTTP API, auth, Host check and validation, in process (Flask test client, threading mode),
with the replay tracer fed from the committed recording(s)."""
import json

import pytest

from web_fixtures import AUTH, TOKEN, load_journeys, make_app, recordings, wait_for, wait_session_state

MARK = 0xDEADBEEF


@pytest.fixture
def app(tmp_path):
    app, _ = make_app(tmp_path)
    yield app
    app.extensions["ipft_web"].sessions.shutdown()


@pytest.fixture
def client(app):
    return app.test_client()


def run_session(client, body=None, states=("stopped",)):
    r = client.post("/api/sessions", json=body or {"mark": "0xdeadbeef"}, headers=AUTH)
    assert r.status_code == 201, r.json
    sid = r.json["id"]
    wait_session_state(client, sid, ("tracing", "stopped", "error"))
    return sid


def stop(client, sid):
    client.post(f"/api/sessions/{sid}/stop", headers=AUTH)
    return wait_session_state(client, sid, ("stopped", "error"))


# -- auth -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/api/status", "/api/sessions", "/api/functions?regex=ip",
                                  "/api/layers", "/static/style.css", "/static/js/app.js", "/nope"])
def test_every_route_needs_the_token(client, path):
    r = client.get(path)
    assert r.status_code == 401
    if path.startswith("/api/"):
        assert set(r.json) == {"error"}


def test_post_needs_the_token_and_changes_nothing(client):
    r = client.post("/api/sessions", json={"mark": 1})
    assert r.status_code == 401
    assert client.get("/api/sessions", headers=AUTH).json["sessions"] == []


def test_bearer_header(client):
    assert client.get("/api/status", headers=AUTH).status_code == 200
    assert client.get("/api/status", headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 401
    assert client.get("/api/status", headers={"Authorization": "Basic " + TOKEN}).status_code == 401


def test_token_link_becomes_cookie_and_leaves_the_address(client):
    r = client.get(f"/?token={TOKEN}")
    assert r.status_code == 303 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    page = client.get("/")      # the test client keeps the cookie
    assert page.status_code == 200 and b"swimlane" in page.data
    assert client.get("/api/status").status_code == 200


def test_wrong_token_link(client):
    r = client.get("/?token=not-the-token-at-all")
    assert r.status_code == 401 and "Set-Cookie" not in r.headers
    assert b"wrong" in r.data


def test_login_form(client):
    assert client.post("/login", data={"token": "nope"}).status_code == 401
    r = client.post("/login", data={"token": TOKEN})
    assert r.status_code == 303 and "HttpOnly" in r.headers["Set-Cookie"]


def test_security_headers(client):
    r = client.get("/", headers=AUTH)
    assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    # every script is ours: no inline script, no CDN
    page = r.data.decode()
    assert "<script>" not in page and "http://" not in page and "https://" not in page
    assert '<script src="/static/vendor/socket.io.min.js"></script>' in page


# -- Host check (DNS rebinding) -------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "",
                                  "[::1", "localhost:abc", "a:b:c"])
@pytest.mark.parametrize("path", ["/", "/api/status", "/socket.io/?EIO=4&transport=polling"])
def test_foreign_host_header_refused(client, host, path):
    r = client.get(path, headers=dict(AUTH, Host=host))
    assert r.status_code == 403
    assert "DNS rebinding" in r.json["error"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080",
                                  "127.1.2.3"])
def test_loopback_host_header_accepted(client, host):
    assert client.get("/api/status", headers=dict(AUTH, Host=host)).status_code == 200


def test_allowed_host_option(tmp_path):
    app, _ = make_app(tmp_path, allow_hosts=["tracer.lab"])
    c = app.test_client()
    assert c.get("/api/status", headers=dict(AUTH, Host="tracer.lab:8080")).status_code == 200
    assert c.get("/api/status", headers=dict(AUTH, Host="other.lab")).status_code == 403


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("body, fragment", [
    ({"mark": "0xnothex"}, "mark must be a 32-bit number"),
    ({"mark": -1}, "between 0 and 0xffffffff"),
    ({"mark": 2**32}, "between 0 and 0xffffffff"),
    ({"mark": True}, "not a boolean"),
    ({"mark": [1]}, "mark must be a number"),
    ({"mark": 1, "mask": "zz"}, "mask must be"),
    ({"mark": 1, "regex": "("}, "invalid regex"),
    ({"mark": 1, "regex": 5}, "regex must be a string"),
    ({"mark": 1, "regex": "a" * 600}, "longer than"),
    ({"mark": 1, "backend": "magic"}, "backend must be one of"),
    ({"mark": 1, "backend": ["auto"]}, "backend must be a string"),
    ({"mark": 1, "shell": "rm -rf /"}, "unknown field 'shell'"),
    ({}, "mark is required"),
])
def test_bad_session_bodies(client, body, fragment):
    r = client.post("/api/sessions", json=body, headers=AUTH)
    assert r.status_code == 400
    assert fragment in r.json["error"] and "\n" not in r.json["error"]
    assert client.get("/api/sessions", headers=AUTH).json["sessions"] == []


def test_body_must_be_a_json_object(client):
    r = client.post("/api/sessions", data="mark=1", headers=dict(AUTH, **{"Content-Type": "application/x-www-form-urlencoded"}))
    assert r.status_code == 415
    r = client.post("/api/sessions", data="[1, 2]", headers=dict(AUTH, **{"Content-Type": "application/json"}))
    assert r.status_code == 400 and "JSON object" in r.json["error"]
    r = client.post("/api/sessions", data="{not json", headers=dict(AUTH, **{"Content-Type": "application/json"}))
    assert r.status_code == 400
    r = client.post("/api/sessions", data="{" + " " * 70000 + "}", headers=dict(AUTH, **{"Content-Type": "application/json"}))
    assert r.status_code == 413 and "error" in r.json
    for body in ("[" * 20000 + "]" * 20000, '{"mark": ' + "[" * 20000 + "]" * 20000 + "}",
                 '{"mark": 1, "mark": 2}', '{"mark": NaN}', b'{"mark": "\xff"}'):
        r = client.post("/api/sessions", data=body, headers=dict(AUTH, **{"Content-Type": "application/json"}))
        assert r.status_code == 400 and r.json["error"].count("\n") == 0, (body[:30], r.status_code, r.data[:200])
    assert client.get("/api/sessions", headers=AUTH).json["sessions"] == []


@pytest.mark.parametrize("query", ["after=-1", "after=abc", "limit=0", "limit=999999", "after=1e3"])
def test_bad_paging(client, query):
    sid = run_session(client)
    r = client.get(f"/api/sessions/{sid}/journeys?{query}", headers=AUTH)
    assert r.status_code == 400 and "error" in r.json


@pytest.mark.parametrize("path", ["/api/sessions/999", "/api/sessions/0/journeys", "/api/sessions/abc",
                                  "/api/sessions/99999999999999999999999/journeys", "/api/nothing"])
def test_unknown_things_are_404_json(client, path):
    r = client.get(path, headers=AUTH)
    assert r.status_code == 404 and "error" in r.json


def test_wrong_method(client):
    r = client.delete("/api/status", headers=AUTH)
    assert r.status_code == 405 and r.json == {"error": "method not allowed"}


# -- functions ----------------------------------------------------------------------------------
def test_functions_preview(client):
    r = client.get("/api/functions?regex=^ip_&limit=3", headers=AUTH)
    assert r.status_code == 200
    body = r.json
    assert body["count"] > 3 and body["shown"] == 3 and len(body["matches"]) == 3
    assert all(m["name"].startswith("ip_") for m in body["matches"])
    assert {"name", "kind", "pos", "module"} <= set(body["matches"][0])
    everything = client.get("/api/functions", headers=AUTH).json
    assert everything["count"] == everything["total"] > body["count"]
    assert everything["tracepoints"] == 2      # skb:consume_skb, skb:kfree_skb in the sample


@pytest.mark.parametrize("regex", ["(", "[a-", "a{2,1}", "x" * 600])
def test_functions_bad_regex(client, regex):
    r = client.get("/api/functions", query_string={"regex": regex}, headers=AUTH)
    assert r.status_code == 400 and r.json["error"]


def test_functions_while_loading(tmp_path):
    from ipft_web.web.app import Settings, create_app
    app, _ = create_app(Settings(token=TOKEN, data_dir=str(tmp_path), tracer=None, preload=False))
    r = app.test_client().get("/api/functions?regex=ip", headers=AUTH)
    assert r.status_code == 503 and "loading" in r.json["error"]


def test_layers_and_backends(client):
    layers = client.get("/api/layers", headers=AUTH).json
    assert [x["id"] for x in layers["layers"]][:4] == ["socket", "tcp", "udp", "icmp"]
    assert client.get("/api/backends", headers=AUTH).json == {"backends": ["auto"]}


# -- sessions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("recording", recordings(), ids=lambda p: p.name)
def test_session_replays_the_recording(tmp_path, recording):
    app, _ = make_app(tmp_path, recording=recording)
    client = app.test_client()
    recorded = load_journeys(recording)
    mark = recorded[0]["mark"]
    sid = run_session(client, {"mark": mark})
    wanted = [j for j in recorded if j["mark"] == mark]
    wait_for(lambda: client.get(f"/api/sessions/{sid}", headers=AUTH).json["journeys"] == len(wanted),
             what="all journeys")
    row = stop(client, sid)
    assert row["state"] == "stopped" and row["error"] is None and row["ended"]
    assert row["drops"] == sum(1 for j in wanted if j["drop_reason"])
    got = client.get(f"/api/sessions/{sid}/journeys", headers=AUTH).json["journeys"]
    assert [j["hits"] for j in got] == [j["hits"] for j in wanted]
    assert [j["id"] for j in got] == list(range(1, len(wanted) + 1))
    for key in ("skb", "mark", "tuple", "dev", "ifindex", "netns", "start_ns", "duration_ns", "drop_reason",
                "drop_func", "end"):
        assert [j[key] for j in got] == [j[key] for j in wanted]
    app.extensions["ipft_web"].sessions.shutdown()


def test_marks_as_strings_and_mask(client):
    sid = run_session(client, {"mark": "0xdead0000", "mask": "0xffff0000"})
    wait_for(lambda: client.get(f"/api/sessions/{sid}", headers=AUTH).json["journeys"] == 13, what="journeys")
    row = stop(client, sid)
    assert row["config"] == {"mark": 0xDEAD0000, "mask": 0xFFFF0000, "regex": None, "backend": "auto"}


def test_regex_keeps_only_matching_functions(client):
    sid = run_session(client, {"mark": MARK, "regex": "^(ip|icmp)_"})
    wait_for(lambda: client.get(f"/api/sessions/{sid}", headers=AUTH).json["journeys"] == 13, what="journeys")
    stop(client, sid)
    journeys = client.get(f"/api/sessions/{sid}/journeys", headers=AUTH).json["journeys"]
    for j in journeys:
        assert j["hits"][0]["t_ns"] == 0
        for h in j["hits"]:
            assert h["func"].startswith(("ip_", "icmp_")) or h["func"] in ("skb:kfree_skb", "skb:consume_skb",
                                                                            "kfree_skbmem")


def test_a_mark_nobody_has_ends_in_a_clear_error(client):
    sid = run_session(client, {"mark": 7})
    row = wait_session_state(client, sid, ("error",))
    assert "no journey in the recording has mark 0x7" in row["error"]
    assert client.get("/api/status", headers=AUTH).json["active"] is None


def test_one_tracer_at_a_time(app, client):
    sid = run_session(client)
    r = client.post("/api/sessions", json={"mark": 1}, headers=AUTH)
    assert r.status_code == 409 and f"session {sid}" in r.json["error"]
    assert len(client.get("/api/sessions", headers=AUTH).json["sessions"]) == 1
    stop(client, sid)
    sid2 = run_session(client)
    assert sid2 == sid + 1
    stop(client, sid2)


def test_stop_is_idempotent_and_delete(client):
    sid = run_session(client)
    assert client.delete(f"/api/sessions/{sid}", headers=AUTH).status_code == 409   # still running
    stop(client, sid)
    r = client.post(f"/api/sessions/{sid}/stop", headers=AUTH)
    assert r.status_code == 200 and r.json["state"] == "stopped"
    assert client.delete(f"/api/sessions/{sid}", headers=AUTH).status_code == 204
    assert client.get(f"/api/sessions/{sid}", headers=AUTH).status_code == 404


def test_stop_while_attaching_ends_the_start_now(tmp_path):
    # one function over 600 s of fake attach: Stop must not wait for the rest of it
    app, _ = make_app(tmp_path, attach=600)
    client = app.test_client()
    try:
        r = client.post("/api/sessions", json={"mark": "0xdeadbeef", "regex": "^ip_rcv$"}, headers=AUTH)
        sid = r.json["id"]
        wait_session_state(client, sid, ("attaching",))
        row = stop(client, sid)
        assert row["state"] == "stopped" and row["error"] is None and row["journeys"] == 0
        assert client.post("/api/sessions", json={"mark": "0xdeadbeef"}, headers=AUTH).status_code == 201, \
            "the next session can start"
    finally:
        app.extensions["ipft_web"].sessions.shutdown()


def test_paging(client):
    sid = run_session(client)
    wait_for(lambda: client.get(f"/api/sessions/{sid}", headers=AUTH).json["journeys"] == 13, what="journeys")
    stop(client, sid)
    seen, after = [], 0
    while True:
        page = client.get(f"/api/sessions/{sid}/journeys?after={after}&limit=5", headers=AUTH).json
        seen += page["journeys"]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert [j["id"] for j in seen] == list(range(1, 14))


def test_cap_per_session(tmp_path):
    app, _ = make_app(tmp_path, max_journeys=20, repeat=3)    # 39 journeys offered
    client = app.test_client()
    sid = run_session(client)
    wait_for(lambda: client.get(f"/api/sessions/{sid}", headers=AUTH).json["over_cap"] == 19, what="cap")
    row = stop(client, sid)
    assert row["journeys"] == 20 and row["capped"] is True and row["cap"] == 20
    assert len(client.get(f"/api/sessions/{sid}/journeys", headers=AUTH).json["journeys"]) == 20


def test_sessions_survive_a_restart(tmp_path):
    app, _ = make_app(tmp_path)
    client = app.test_client()
    sid = run_session(client)
    wait_for(lambda: client.get(f"/api/sessions/{sid}", headers=AUTH).json["journeys"] == 13, what="journeys")
    stop(client, sid)
    before = client.get(f"/api/sessions/{sid}/journeys", headers=AUTH).json
    app.extensions["ipft_web"].store.close()

    app2, _ = make_app(tmp_path)
    c2 = app2.test_client()
    row = c2.get(f"/api/sessions/{sid}", headers=AUTH).json
    assert row["state"] == "stopped" and row["journeys"] == 13
    assert c2.get(f"/api/sessions/{sid}/journeys", headers=AUTH).json == before


def test_a_session_running_at_a_crash_is_marked_interrupted(tmp_path):
    app, _ = make_app(tmp_path)
    client = app.test_client()
    sid = run_session(client)      # never stopped: the "process" dies, and its lock with it
    app.extensions["ipft_web"].store.lockfile.close()
    app2, _ = make_app(tmp_path)
    row = app2.test_client().get(f"/api/sessions/{sid}", headers=AUTH).json
    assert row["state"] == "interrupted" and "stopped while" in row["error"]
    app.extensions["ipft_web"].sessions.shutdown()


def test_one_server_per_data_directory(app, tmp_path):
    from ipft_web.errors import EnvError
    with pytest.raises(EnvError, match=r"is in use by another ipft-web \(pid \d+\)"):
        make_app(tmp_path)


def test_old_sessions_are_pruned(tmp_path):
    app, _ = make_app(tmp_path, keep_sessions=2)
    client = app.test_client()
    ids = []
    for _ in range(4):
        sid = run_session(client)
        stop(client, sid)
        ids.append(sid)
    listed = [s["id"] for s in client.get("/api/sessions", headers=AUTH).json["sessions"]]
    assert listed == [ids[3], ids[2]]


def test_aggregate(client):
    sid = run_session(client)
    wait_for(lambda: client.get(f"/api/sessions/{sid}", headers=AUTH).json["journeys"] == 13, what="journeys")
    stop(client, sid)
    agg = client.get(f"/api/sessions/{sid}/aggregate", headers=AUTH).json
    assert agg["journeys"] == 13
    assert sum(p["count"] for p in agg["paths"]) == 13
    assert agg["drops"] == [{"reason": "NETFILTER_DROP", "func": "nf_hook_slow", "count": 2}]
    assert agg["functions"][0]["func"] == "nf_hook_slow"


def test_internal_errors_are_one_line_json(app, client, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kaboom\nwith a second line")
    monkeypatch.setattr(app.extensions["ipft_web"].store, "sessions", boom)
    r = client.get("/api/sessions", headers=AUTH)
    assert r.status_code == 500 and r.json == {"error": "internal error: RuntimeError"}
    assert b"Traceback" not in r.data


def test_tracer_crash_mid_session_is_recorded(app, client, monkeypatch):
    from ipft_web import replay

    def bad_poll(self, timeout_ms=0):
        raise OSError("ring buffer went away")
    monkeypatch.setattr(replay.ReplayTracer, "poll", bad_poll)
    sid = run_session(client)
    row = wait_session_state(client, sid, ("error",))
    assert row["error"] == "internal error: OSError: ring buffer went away"


def test_status_during_a_session(client):
    sid = run_session(client)
    st = client.get("/api/status", headers=AUTH).json
    assert st["active"]["id"] == sid and st["tracer"]["backend"] == "replay"
    assert st["progress"]["stage"] == "attaching" and st["progress"]["done"] == st["progress"]["total"] > 0
    assert st["tracer_kind"] == "replay"
    stop(client, sid)
    assert client.get("/api/status", headers=AUTH).json["active"] is None


def test_exports_jsonl(client):
    sid = run_session(client)
    wait_for(lambda: client.get(f"/api/sessions/{sid}", headers=AUTH).json["journeys"] == 13, what="journeys")
    stop(client, sid)
    r = client.get(f"/api/sessions/{sid}/export.jsonl", headers=AUTH)
    assert r.status_code == 200 and r.mimetype == "application/x-ndjson"
    assert "attachment" in r.headers["Content-Disposition"]
    lines = r.data.decode().splitlines()
    api = client.get(f"/api/sessions/{sid}/journeys", headers=AUTH).json["journeys"]
    assert [json.loads(x) for x in lines] == api


# -- the marks part's blueprint, behind the same auth ---------------------------------------------
def test_marks_api_is_registered_behind_auth(client):
    pytest.importorskip("ipft_web.marks.api")
    assert client.get("/api/marks").status_code == 401
    r = client.get("/api/marks", headers=AUTH)
    assert r.status_code in (200, 409), r.data      # 409: no iptables/nft here


def test_marks_default_is_the_sessions_mark(app, client):
    pytest.importorskip("ipft_web.marks.api")
    default = app.config["IPFT_MARKS_DEFAULT"]
    assert default(None) is None
    sid = run_session(client, {"mark": "0xdead0000", "mask": "0xffff0000"})
    assert default(str(sid)) == (0xDEAD0000, 0xFFFF0000)
    assert default(None) == (0xDEAD0000, 0xFFFF0000)
    stop(client, sid)
    assert default(str(sid)) == (0xDEAD0000, 0xFFFF0000)


@pytest.mark.parametrize("body", [{"mark": 1, "fields": "skb->len"}, {"mark": 1, "fields": [1]},
                                  {"mark": 1, "fields": ["skb->len; reboot"]}, {"mark": 1, "fields": ["nope->x"]},
                                  {"mark": 1, "script": "../../etc/passwd"}, {"mark": 1, "script": 5}])
def test_bad_fields_are_400_and_start_nothing(client, body):
    r = client.post("/api/sessions", json=body, headers=AUTH)
    assert r.status_code == 400 and "error" in r.json, r.json


def test_fields_are_kept_with_the_session(client):
    sid = run_session(client, {"mark": "0xdeadbeef", "fields": ["skb->len"]})
    stop(client, sid)
    row = client.get(f"/api/sessions/{sid}", headers=AUTH).json
    cfg = row.get("config") or row.get("session", {}).get("config")
    assert cfg["fields"] == ["skb->len"], row


def test_scripts_list_for_the_picker(client):
    r = client.get("/api/scripts", headers=AUTH)
    assert r.status_code == 200
    names = {sc["name"]: sc for sc in r.json["scripts"]}
    assert {"gso", "tcp", "conntrack", "socket"} <= set(names)
    assert "shinfo->gso_segs" in names["gso"]["fields"] and names["gso"]["chart"]
    assert client.get("/api/scripts").status_code == 401


def test_bad_field_path_is_a_400_before_anything_starts(tmp_path):
    """With the real tracer, a field the kernel's types lack is refused at POST time, naming members."""
    from ipft_web.kernel.view import KernelView
    from ipft_web.web.app import Settings, create_app
    KernelView.load()   # what ipft-web's start-up does (BTF of the running kernel; no root needed)
    app, _ = create_app(Settings(token=TOKEN, data_dir=str(tmp_path / "data"), tracer="bcc", preload=False))
    c = app.test_client()
    r = c.post("/api/sessions", json={"mark": 1, "fields": ["skb->no_such_member"]}, headers=AUTH)
    assert r.status_code == 400 and "no_such_member" in r.json["error"] and "len" in r.json["error"], r.json
    r = c.post("/api/sessions", json={"mark": 1, "fields": ["skb->len->x"]}, headers=AUTH)
    assert r.status_code == 400, r.json
    assert c.get("/api/sessions", headers=AUTH).json["sessions"] == []
