"""`ipft-web` as a real server process on loopback, in eventlet and threading modes: python-socketio
client, Host check on the wire (HTTP, Engine.IO polling and the WebSocket upgrade), the event loop
staying responsive while the tracer attaches, clean shutdown on SIGTERM, and the command line."""
import http.client
import json
import time

import pytest
import socketio
import websocket

from web_fixtures import SAMPLE, TOKEN, Server, wait_for

MODES = ["eventlet", "threading"]


@pytest.fixture(params=MODES)
def server(request, tmp_path):
    srv = Server(tmp_path, async_mode=request.param, extra_env={"IPFT_WEB_REPLAY_SPEED": "8"})
    yield srv
    srv.stop()


def raw_get(port, path, host):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host)
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def client(server, **kw):
    sio = socketio.Client(reconnection=False)
    got = {"journeys": [], "status": [], "ended": []}
    sio.on("journeys", lambda m: got["journeys"].extend(json.loads(m)["journeys"]))
    sio.on("status", lambda m: got["status"].append(m))
    sio.on("ended", lambda m: got["ended"].append(m))
    sio.connect(server.base, wait_timeout=10, **kw)
    return sio, got


def test_printed_url_and_host_check_on_the_wire(server):
    assert server.url == f"http://127.0.0.1:{server.port}/?token={TOKEN}"
    for path in ("/api/status", "/socket.io/?EIO=4&transport=polling", "/"):
        status, body = raw_get(server.port, path, "attacker.example")
        assert status == 403 and b"DNS rebinding" in body
    assert raw_get(server.port, "/api/status", f"localhost:{server.port}")[0] == 200
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        websocket.create_connection(f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
                                    host="attacker.example", timeout=5)
    assert exc.value.status_code == 403


def test_socketio_refuses_without_token(server):
    sio = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(server.base, wait_timeout=5, transports=["websocket"])
    with pytest.raises(socketio.exceptions.ConnectionError):
        sio.connect(server.base, wait_timeout=5, auth={"token": "wrong-wrong-wrong-wrong"})


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_live_session_end_to_end(server, transport):
    sio, got = client(server, auth={"token": TOKEN}, transports=[transport])
    try:
        status, body = server.post("/api/sessions", {"mark": "0xdeadbeef", "regex": ""})
        assert status == 201, body
        sid = body["id"]
        wait_for(lambda: len(got["journeys"]) >= 13, timeout=20, what="13 journeys over Socket.IO")
        assert sorted(j["id"] for j in got["journeys"]) == list(range(1, 14))
        dropped = [j for j in got["journeys"] if j["drop_reason"]]
        assert {(j["drop_reason"], j["drop_func"]) for j in dropped} == {("NETFILTER_DROP", "nf_hook_slow")}
        assert server.post(f"/api/sessions/{sid}/stop")[0] == 200
        wait_for(lambda: got["ended"], timeout=10, what="ended")
        assert got["ended"][0]["session"]["state"] == "stopped"
        status, page = server.get(f"/api/sessions/{sid}/journeys")
        assert [j["id"] for j in page["journeys"]] == list(range(1, 14))
    finally:
        sio.disconnect()
    assert "Traceback" not in server.stderr()


@pytest.mark.parametrize("mode", MODES)
def test_event_loop_stays_responsive_while_attaching(tmp_path, mode):
    srv = Server(tmp_path, async_mode=mode, extra_env={"IPFT_WEB_REPLAY_ATTACH": "3"})
    try:
        sio, got = client(srv, auth={"token": TOKEN})
        t0 = time.monotonic()
        assert srv.post("/api/sessions", {"mark": "0xdeadbeef"})[0] == 201
        worst = 0.0
        while time.monotonic() - t0 < 2.5:
            t = time.monotonic()
            status, body = srv.get("/api/status")
            worst = max(worst, time.monotonic() - t)
            assert status == 200
            time.sleep(0.05)
        assert body["active"]["state"] == "attaching"
        assert worst < 0.5, f"an API call took {worst:.3f}s while the tracer attached"
        progress = [s["progress"]["done"] for s in got["status"] if s.get("progress")
                    and s["progress"]["stage"] == "attaching"]
        assert len(set(progress)) >= 5, "progress events while attaching"
        wait_for(lambda: len(got["journeys"]) >= 13, timeout=15, what="journeys after attach")
        sio.disconnect()
    finally:
        srv.stop()


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_does_not_wait_for_a_start_in_progress(tmp_path, mode):
    # one function over 600 s: the fake attach sleeps in one piece, as a compile or a slow kernel
    # attach would (eventlet's thread pool joined such a call at exit: Ctrl-C waited for it)
    srv = Server(tmp_path, async_mode=mode, extra_env={"IPFT_WEB_REPLAY_ATTACH": "600"})
    try:
        status, body = srv.post("/api/sessions", {"mark": "0xdeadbeef", "regex": "^ip_rcv$"})
        assert status == 201, body
        wait_for(lambda: srv.get(f"/api/sessions/{body['id']}")[1]["state"] == "attaching", timeout=15,
                 what="attaching")
    finally:
        assert srv.stop(timeout=30) == 0, srv.stderr()[-6000:]
    assert "Traceback" not in srv.stderr()


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_stops_the_running_session(tmp_path, mode):
    srv = Server(tmp_path, async_mode=mode)
    status, body = srv.post("/api/sessions", {"mark": "0xdeadbeef"})
    sid = body["id"]
    wait_for(lambda: srv.get(f"/api/sessions/{sid}")[1]["journeys"] == 13, timeout=15, what="journeys")
    assert srv.stop() == 0, srv.stderr()[-6000:]
    err = srv.stderr()
    assert "Traceback" not in err
    # reopen the data directory: the session was closed properly, not "interrupted"
    srv2 = Server(tmp_path, async_mode=mode, args=["--data-dir", str(tmp_path / f"data-{srv.port}")])
    try:
        row = srv2.get(f"/api/sessions/{sid}")[1]
        assert row["state"] == "stopped" and row["journeys"] == 13
    finally:
        srv2.stop()


# -- the command line ---------------------------------------------------------------------------
def run_main(argv, monkeypatch, capsys, env=None):
    from ipft_web.web import server
    for k in ("IPFT_WEB_TRACER", "IPFT_WEB_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    code = server.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_refuses_to_start_without_root(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code, out, err = run_main(["--data-dir", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("ipft-web: error: tracing needs root")


def test_bad_token_and_data_dir(monkeypatch, capsys, tmp_path):
    env = {"IPFT_WEB_TRACER": f"replay:{SAMPLE}"}
    for bad in ("short", "has space in it 0123456789", "amp&ersand-0123456789"):
        code, _, err = run_main(["--token", bad], monkeypatch, capsys, env)
        assert code == 2 and err.startswith("ipft-web: error: the token must be") and err.count("\n") == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_main(["--data-dir", str(blocker / "sub")], monkeypatch, capsys, env)
    assert code == 2 and err.startswith("ipft-web: error: cannot use data directory") and err.count("\n") == 1


def test_bad_replay_spec(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(["--data-dir", str(tmp_path)], monkeypatch, capsys,
                            {"IPFT_WEB_TRACER": "replay:/nonexistent.jsonl"})
    assert code == 2 and "is not a file" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["--port", "0"], ["--port", "http"], ["--async-mode", "gevent"],
                                  ["--max-journeys", "-5"]])
def test_bad_arguments(monkeypatch, capsys, argv):
    from ipft_web.web import server
    with pytest.raises(SystemExit) as exc:
        server.main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_port_in_use(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        import subprocess
        import sys
        proc = subprocess.run([sys.executable, "-m", "ipft_web.web.server", "--port", str(port), "--data-dir",
                               str(tmp_path), "--token", TOKEN, "--tracer", f"replay:{SAMPLE}"],
                              capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"ipft-web: error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_a_second_server_on_the_same_port_fails(tmp_path, mode):
    import subprocess
    import sys
    srv = Server(tmp_path, async_mode=mode)
    try:
        proc = subprocess.run([sys.executable, "-m", "ipft_web.web.server", "--port", str(srv.port), "--data-dir",
                               str(tmp_path / "other"), "--token", TOKEN, "--tracer", f"replay:{SAMPLE}",
                               "--async-mode", mode], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2
        assert f"cannot listen on 127.0.0.1:{srv.port}" in proc.stderr
    finally:
        srv.stop()


def test_host_warning_and_url():
    from ipft_web.web.server import _host_warning, url_for
    assert _host_warning("127.0.0.1") is None and _host_warning("::1") is None and _host_warning("localhost") is None
    assert "beyond loopback" in _host_warning("0.0.0.0")
    assert "beyond loopback" in _host_warning("192.0.2.1")
    assert url_for("::1", 8080, "T") == "http://[::1]:8080/?token=T"
    assert url_for("0.0.0.0", 80, "T") == "http://127.0.0.1:80/?token=T"


# -- the real tracer (BCC, host kernel) through the server -----------------------------------------
@pytest.mark.root
@pytest.mark.parametrize("mode", MODES)
def test_real_tracer_through_the_server(tmp_path, netns, mode):
    pytest.importorskip("bcc")
    ns = netns("webl")
    ns.iptables("-t", "raw", "-A", "OUTPUT", "-p", "icmp", "-j", "MARK", "--set-mark", "0xdeadbeef")
    srv = Server(tmp_path, tracer="bcc", async_mode=mode)
    try:
        sio, got = client(srv, auth={"token": TOKEN})
        status, body = srv.post("/api/sessions", {"mark": "0xdeadbeef", "regex": "^(net|skb):"})
        assert status == 201, body
        sid = body["id"]
        worst, t0 = 0.0, time.monotonic()
        while time.monotonic() - t0 < 240:
            t = time.monotonic()
            status, row = srv.get(f"/api/sessions/{sid}")
            worst = max(worst, time.monotonic() - t)
            if row["state"] in ("tracing", "error", "stopped"):
                break
            time.sleep(0.1)
        assert row["state"] == "tracing", row["error"]
        # compiling and attaching ran off the event loop: the API kept answering (an answer well
        # inside the time the start took; had the loop been blocked it would wait for all of it),
        # and progress was sent. Not a speed goal: emulated guests are slow across the board.
        took = time.monotonic() - t0
        assert worst < max(1.0, took / 4), f"an API call took {worst:.2f}s of a {took:.1f}s start"
        assert any(s.get("progress") for s in got["status"])
        ns.ping("127.0.0.2", count=3)
        requests = lambda: [j for j in got["journeys"] if (j.get("tuple") or {}).get("icmp_type") == 8]  # noqa: E731
        wait_for(lambda: len(requests()) >= 3, timeout=30, what="3 echo requests over Socket.IO")
        for j in requests():
            assert j["mark"] == 0xDEADBEEF and j["hits"] and j["tuple"]["dst"] == "127.0.0.2"
        assert srv.post(f"/api/sessions/{sid}/stop")[0] == 200
        wait_for(lambda: got["ended"], timeout=60, what="ended")
        final = got["ended"][0]["session"]
        assert final["state"] == "stopped" and final["stats"]["attached"] > 0
        stored = srv.get(f"/api/sessions/{sid}/journeys")[1]["journeys"]
        assert len(stored) == final["journeys"] >= 3
        sio.disconnect()
    finally:
        assert srv.stop() == 0, srv.stderr()[-6000:]
    assert "Traceback" not in srv.stderr()
