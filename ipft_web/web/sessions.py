"""One tracing session at a time, run as a background task and watched by any number of browsers.

The task: compile + attach off the event loop (progress to the browsers meanwhile), then poll the
tracer without blocking (tracer.poll(0) + socketio.sleep), store journeys and emit them in batches
about every 100 ms, then detach off the event loop. It uses only socketio.start_background_task,
socketio.sleep and socketio.emit, so eventlet and threading modes behave alike.

Socket.IO events (server -> browsers): "status" {session, tracer, progress, rates},
"journeys" (binary: UTF-8 JSON {"session": id, "journeys": [Journey, ...]}, built from the text the
store keeps, so a batch is serialised once), "ended" {session}.
"""
from __future__ import annotations

import collections
import threading
import time

from ..errors import Cancelled, EnvError, UsageError
from ..logs import get_logger
from . import offhub

log = get_logger(__name__)

ACTIVE = ("starting", "attaching", "tracing", "stopping")
SHUTDOWN_WAIT = 10.0   # seconds the exit waits for a start to notice it was stopped


class Busy(Exception):
    """A session is running already (HTTP 409)."""


def one_line(exc: BaseException) -> str:
    if isinstance(exc, (UsageError, EnvError)):
        text = str(exc)
    else:
        text = f"internal error: {type(exc).__name__}: {exc}"
    return (text.splitlines() or [""])[0][:500]


class _Live:
    def __init__(self, sid: int, config, cap: int):
        self.id = sid
        self.config = config
        self.cap = cap
        self.state = "starting"
        self.error: str | None = None
        self.tracer = None
        self.start_job = None
        self.buffer: collections.deque = collections.deque()
        self.progress = {"stage": "starting", "done": 0, "total": 0}
        self.stop_requested = False
        self.kept = 0
        self.over_cap = 0
        self.drops = 0
        self.started = time.time()
        self.rates = {"events_per_s": 0.0, "journeys_per_s": 0.0}
        self._last_rate = (time.monotonic(), 0, 0)

    def on_progress(self, stage, done, total):   # may be called from another OS thread
        self.progress = {"stage": str(stage), "done": int(done or 0), "total": int(total or 0)}

    def stats(self) -> dict:
        if self.tracer is None:
            return {}
        try:
            return dict(self.tracer.stats())
        except Exception as exc:  # stats must never kill the status line
            return {"state": "unknown", "error": one_line(exc)}


class SessionManager:
    def __init__(self, socketio, store, tracer_factory, tracer_label: str, max_journeys: int = 20000,
                 keep_sessions: int = 50, emit_interval: float = 0.1, poll_interval: float = 0.02,
                 status_interval: float = 0.5, max_batch: int = 500):
        self.socketio = socketio
        self.store = store
        self.factory = tracer_factory
        self.tracer_label = tracer_label
        self.max_journeys = max_journeys
        self.keep_sessions = keep_sessions
        self.emit_interval = emit_interval
        self.poll_interval = poll_interval
        self.status_interval = status_interval
        self.max_batch = max_batch
        self.live: _Live | None = None
        self.lock = threading.Lock()
        self.on_end = []       # callbacks(session_id) when a session ends (e.g. remove its mark rules)

    # -- API -----------------------------------------------------------------------------
    def start(self, config) -> dict:
        """Start tracing `config` (a validated TraceConfig); Busy if a session runs already."""
        with self.lock:
            if self.live is not None:
                raise Busy(f"session {self.live.id} is {self.live.state}; stop it first "
                           "(one tracer at a time: kernel resources are shared)")
            cfg = {"mark": config.mark, "mask": config.mask, "regex": config.regex or None,
                   "backend": config.backend}
            if config.fields:
                cfg["fields"] = list(config.fields)
            if config.script:
                cfg["script"] = config.script
            sid = self.store.create_session(cfg, self.tracer_label, self.max_journeys, self.keep_sessions)
            live = _Live(sid, config, self.max_journeys)
            self.live = live
        self.socketio.start_background_task(self._run, live)
        return self.session(sid)

    def stop(self, sid: int) -> dict | None:
        live = self.live
        if live is not None and live.id == sid:
            live.stop_requested = True
            if live.state in ("starting", "attaching", "tracing"):
                live.state = "stopping"
            self._cancel_start(live)
        return self.session(sid)

    def session(self, sid: int) -> dict | None:
        row = self.store.session(sid)
        live = self.live
        if row is not None and live is not None and live.id == sid:
            row.update(self._live_fields(live))
        return row

    def sessions(self) -> list[dict]:
        rows = self.store.sessions()
        live = self.live
        for row in rows:
            if live is not None and row["id"] == live.id:
                row.update(self._live_fields(live))
        return rows

    def status(self) -> dict:
        live = self.live
        if live is None:
            return {"active": None, "tracer": None, "progress": None, "rates": None}
        return {"active": self.session(live.id), "tracer": live.stats(), "progress": live.progress,
                "rates": live.rates}

    def shutdown(self) -> None:
        """At exit: stop the tracer now (blocking), so nothing stays attached to the kernel."""
        live = self.live
        if live is None:
            return
        live.stop_requested = True
        self._cancel_start(live)
        if live.start_job is not None:   # a start notices between two functions (a compile is not interrupted)
            live.start_job.join(SHUTDOWN_WAIT)
        if live.tracer is not None:
            try:
                live.tracer.stop()
            except Exception as exc:
                log.error("stopping the tracer failed: %s", one_line(exc))
        try:
            self._flush(live, emit=False)
            self._finish(live, "stopped", None, emit=False)
        except Exception as exc:  # the store may be gone already
            log.error("could not record the end of session %s: %s", live.id, one_line(exc))

    @staticmethod
    def _cancel_start(live: _Live) -> None:
        """A start in progress stops at its next step and undoes what it attached."""
        cancel = getattr(live.tracer, "cancel", None)
        if cancel is not None:
            cancel()

    @staticmethod
    def _live_fields(live: _Live) -> dict:
        return {"state": live.state, "error": live.error, "journeys": live.kept, "over_cap": live.over_cap,
                "drops": live.drops, "capped": live.over_cap > 0}

    # -- the background task -------------------------------------------------------------
    def _emit(self, event: str, payload) -> None:
        try:
            self.socketio.emit(event, payload)
        except Exception as exc:  # a browser gone mid-emit must not stop the tracer
            log.debug("emit %s failed: %s", event, exc)

    def _emit_status(self, live: _Live) -> None:
        now = time.monotonic()
        stats = live.stats()
        t0, ev0, j0 = live._last_rate
        dt = now - t0
        if dt >= 0.25:
            events, journeys = int(stats.get("events") or 0), int(stats.get("journeys") or 0)
            live.rates = {"events_per_s": round((events - ev0) / dt, 1),
                          "journeys_per_s": round((journeys - j0) / dt, 1)}
            live._last_rate = (now, events, journeys)
        self._emit("status", self.status())

    def _run(self, live: _Live) -> None:
        try:
            self._trace(live)
        except Exception as exc:   # last resort: record it, never leave the session "running"
            log.exception("session %s failed", live.id)
            self._stop_tracer(live)
            self._finish(live, "error", one_line(exc))

    def _trace(self, live: _Live) -> None:
        live.state = "attaching"
        self.store.update_session(live.id, state="attaching")
        self._emit_status(live)
        try:
            live.tracer = self.factory(live.config, live.buffer.append, live.on_progress)
            if live.stop_requested:   # Stop came before the tracer existed
                self._cancel_start(live)
            live.start_job = job = offhub.run_off_hub(live.tracer.start)
            offhub.wait(self.socketio, job, tick=lambda: self._emit_status(live))
        except Cancelled:   # stopped while starting: the tracer has undone what it attached
            self._stop_tracer(live)
            self._flush(live)
            self._finish(live, "stopped", None)
            return
        except Exception as exc:
            self._stop_tracer(live)
            self._flush(live)
            self._finish(live, "error", one_line(exc))
            return
        if not live.stop_requested:
            live.state = "tracing"
            self.store.update_session(live.id, state="tracing")
        self._emit_status(live)
        last_emit = last_status = last_save = time.monotonic()
        while not live.stop_requested:
            try:
                live.tracer.poll(0)
            except Exception as exc:
                self._stop_tracer(live)
                self._flush(live)
                self._finish(live, "error", one_line(exc))
                return
            now = time.monotonic()
            if now - last_emit >= self.emit_interval:
                self._flush(live)
                last_emit = now
            if now - last_status >= self.status_interval:
                self._emit_status(live)
                last_status = now
            if now - last_save >= 2.0:
                self.store.update_session(live.id, journeys=live.kept, drops=live.drops,
                                          over_cap=live.over_cap, stats=live.stats())
                last_save = now
            self.socketio.sleep(self.poll_interval)
        live.state = "stopping"
        self._emit_status(live)
        error = self._stop_tracer(live)
        self._flush(live)
        self._finish(live, "error" if error else "stopped", error)

    def _stop_tracer(self, live: _Live) -> str | None:
        if live.tracer is None:
            return None
        try:
            job = offhub.run_off_hub(live.tracer.stop)
            offhub.wait(self.socketio, job)
        except Exception as exc:
            log.error("detaching failed: %s", one_line(exc))
            return "detaching failed: " + one_line(exc)
        return None

    def _flush(self, live: _Live, emit: bool = True) -> None:
        """Store and emit what the tracer produced, in batches, yielding to the event loop between them."""
        first = True
        while live.buffer:
            if not first:
                self.socketio.sleep(0)
            first = False
            batch = []
            while live.buffer and len(batch) < self.max_batch:
                batch.append(live.buffer.popleft())
            room = max(live.cap - live.kept, 0)
            kept = batch[:room]
            live.over_cap += len(batch) - len(kept)
            if not kept:
                continue
            texts = self.store.add_journeys(live.id, kept)
            live.kept += len(kept)
            live.drops += sum(1 for j in kept if j.get("drop_reason"))
            if emit:
                payload = '{"session":%d,"journeys":[%s]}' % (live.id, ",".join(texts))
                self._emit("journeys", payload.encode())

    def _finish(self, live: _Live, state: str, error: str | None, emit: bool = True) -> None:
        with self.lock:
            if self.live is not live:
                return
            # the store first, then the live slot: a reader sees the final state only once the
            # session is no longer active (never "error" with /api/status still naming it)
            self.store.update_session(live.id, state=state, error=error, ended=time.time(), journeys=live.kept,
                                      drops=live.drops, over_cap=live.over_cap, stats=live.stats())
            self.live = None
            live.state = state
            live.error = error
        for callback in list(self.on_end):
            try:
                callback(live.id)
            except Exception as exc:
                log.error("end-of-session hook failed: %s", one_line(exc))
        if emit:
            row = self.store.session(live.id)
            self._emit("ended", {"session": row})
            self._emit("status", self.status())
