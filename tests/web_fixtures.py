"""Helpers for the ipft-web tests: an app on a replay recording, polling, a server subprocess."""
from __future__ import annotations

import json
import os
import socket
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SAMPLE = DATA / "replay-sample.jsonl"
HOST_RECORDING = DATA / "recording-host.jsonl"
GSO_RECORDING = DATA / "recording-host-gso.jsonl"     # with fields (tests/data/make_gso_recording.py)
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# the server as `python -m ipft_web.web.server ARGS`, with SIGUSR1 dumping every thread's stack
_WITH_STACK_DUMPS = ("import faulthandler, runpy, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True); "
                     "sys.argv[0] = 'ipft-web'; runpy.run_module('ipft_web.web.server', run_name='__main__')")


def recordings() -> list[Path]:
    """The replay recordings to run the tests on: the sample, and the host recordings once they exist."""
    return [p for p in (SAMPLE, HOST_RECORDING, GSO_RECORDING) if p.is_file()]


def load_journeys(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_app(tmp_path, recording=SAMPLE, max_journeys=20000, speed=0, repeat=1, attach=0.05, **kw):
    from ipft_web.web.app import Settings, create_app
    settings = Settings(token=TOKEN, data_dir=str(tmp_path / "data"), tracer=f"replay:{recording}",
                        max_journeys=max_journeys, preload=False,
                        replay={"speed": speed, "repeat": repeat, "attach": attach}, **kw)
    app, sio = create_app(settings)
    app.extensions["ipft_web"].catalog.load()
    return app, sio


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_session_state(client, sid, states, timeout=10.0):
    return wait_for(lambda: client.get(f"/api/sessions/{sid}", headers=AUTH).json["state"] in states and
                    client.get(f"/api/sessions/{sid}", headers=AUTH).json, timeout, what=f"session {sid} in {states}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`ipft-web` as a subprocess on 127.0.0.1 (replay tracer unless tracer="bcc")."""

    def __init__(self, tmp_path, tracer=f"replay:{SAMPLE}", async_mode="eventlet", extra_env=None, args=()):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, IPFT_WEB_TRACER=tracer, PYTHONUNBUFFERED="1")
        env.setdefault("IPFT_WEB_REPLAY_SPEED", "0")
        env.update(extra_env or {})
        if tracer == "bcc":
            env.pop("IPFT_WEB_TRACER")
        self.log = open(tmp_path / f"server-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WITH_STACK_DUMPS, "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(tmp_path / f"data-{self.port}"), "--token", TOKEN, "--async-mode", async_mode,
             *args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if "open http" not in line:
            self.stop()
            raise AssertionError(f"server did not start: {line!r}\n{self.stderr()}")
        self.url = line.split("open ", 1)[1].strip()
        wait_for(self._up, 90, what="server listening")   # emulated guests are slow to answer first

    def _up(self):
        try:
            self.get("/api/status")
            return True
        except (urllib.error.URLError, OSError):   # refused, reset, or not answering yet (timeout)
            return False

    def request(self, method, path, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        h = dict(AUTH)
        if body is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw and resp.headers.get_content_type() == "application/json" else raw)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def stderr(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout=30) -> int:
        """SIGTERM and wait; past `timeout`, its threads' stacks go to its stderr and it is killed
        (-9): a test asserting 0 then shows why with `srv.stderr()`."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)
                time.sleep(2)
                self.log.write(f"\n[test] no exit {timeout}s after SIGTERM: killed\n")
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        return self.proc.returncode
