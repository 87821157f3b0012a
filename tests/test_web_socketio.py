"""Socket.IO in process (Flask-SocketIO's test client): auth at connect, live status and journeys."""
import json

import pytest

from web_fixtures import AUTH, TOKEN, make_app, wait_for


@pytest.fixture
def app_sio(tmp_path):
    app, sio = make_app(tmp_path, speed=4)
    yield app, sio
    app.extensions["ipft_web"].sessions.shutdown()


def batch(arg):
    """A "journeys" event: binary UTF-8 JSON {"session", "journeys"}."""
    assert isinstance(arg, (bytes, bytearray))
    return json.loads(arg)


def events(client, name):
    return [e["args"][0] for e in client.get_received() if e["name"] == name]


def test_connect_without_token_is_refused(app_sio):
    app, sio = app_sio
    c = sio.test_client(app)
    assert not c.is_connected()
    c = sio.test_client(app, auth={"token": "wrong-wrong-wrong-wrong"})
    assert not c.is_connected()
    c = sio.test_client(app, auth="not a dict")
    assert not c.is_connected()


def test_connect_with_auth_token_gets_status(app_sio):
    app, sio = app_sio
    c = sio.test_client(app, auth={"token": TOKEN})
    assert c.is_connected()
    status = events(c, "status")
    assert status and status[0]["active"] is None
    assert c.emit("status", callback=True)["active"] is None
    c.disconnect()


def test_connect_with_cookie(app_sio):
    app, sio = app_sio
    http = app.test_client()
    http.get(f"/?token={TOKEN}")            # sets the cookie in this client
    c = sio.test_client(app, flask_test_client=http)
    assert c.is_connected()


def test_connect_with_bearer_header(app_sio):
    app, sio = app_sio
    c = sio.test_client(app, headers=AUTH)
    assert c.is_connected()


def test_live_session_reaches_every_browser(app_sio):
    app, sio = app_sio
    http = app.test_client()
    a = sio.test_client(app, auth={"token": TOKEN})
    b = sio.test_client(app, auth={"token": TOKEN})
    sid = http.post("/api/sessions", json={"mark": "0xdeadbeef"}, headers=AUTH).json["id"]
    got = {"a": [], "b": []}
    ends = {"a": [], "b": []}
    statuses = []

    def collect():
        for key, c in (("a", a), ("b", b)):
            for e in c.get_received():
                if e["name"] == "journeys":
                    msg = batch(e["args"][0])
                    assert msg["session"] == sid
                    got[key] += msg["journeys"]
                elif e["name"] == "ended":
                    ends[key].append(e["args"][0])
                elif e["name"] == "status" and key == "a":
                    statuses.append(e["args"][0])
        return len(got["a"]) >= 13 and len(got["b"]) >= 13
    wait_for(collect, timeout=15, what="13 journeys in both clients")
    assert [j["id"] for j in got["a"]] == [j["id"] for j in got["b"]] == list(range(1, 14))
    states = [s["active"]["state"] for s in statuses if s["active"]]
    assert "attaching" in states and "tracing" in states
    progress = [s["progress"] for s in statuses if s["progress"] and s["progress"]["stage"] == "attaching"]
    assert progress and progress[-1]["done"] == progress[-1]["total"]

    http.post(f"/api/sessions/{sid}/stop", headers=AUTH)
    wait_for(lambda: collect() and ends["a"] and ends["b"], what="ended event")
    assert ends["a"][0]["session"]["state"] == "stopped"
    assert ends["a"][0]["session"]["journeys"] == 13


def test_journeys_are_batched(tmp_path):
    app, sio = make_app(tmp_path, speed=0, repeat=20)      # 260 journeys as fast as polled
    try:
        c = sio.test_client(app, auth={"token": TOKEN})
        http = app.test_client()
        http.post("/api/sessions", json={"mark": "0xdeadbeef"}, headers=AUTH)
        batches = []

        def collect():
            batches.extend(len(batch(e["args"][0])["journeys"]) for e in c.get_received() if e["name"] == "journeys")
            return sum(batches) >= 260
        wait_for(collect, timeout=15, what="260 journeys")
        assert sum(batches) == 260
        assert len(batches) < 260 / 5      # emitted in batches, not one event per journey
    finally:
        app.extensions["ipft_web"].sessions.shutdown()
