"""ReplayTracer: the Tracer interface of docs/design.md, fed from a JSON Lines recording of journeys.

For tests and demos of the web UI only: it proves nothing about tracing. It applies the session's
mark/mask and function regex to the recorded journeys the way the kernel side would (hits of
functions the regex leaves out disappear; the free/drop tracepoints always stay), then releases
them with the recorded gaps between packets (scaled by `speed`, each gap capped at `max_gap`
seconds; speed 0 releases them as fast as poll() is called). `repeat` plays the recording that many
times, with fresh ids and later timestamps, e.g. to load the UI with 10,000 journeys.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from .errors import Cancelled, UsageError

ALWAYS_TRACED = ("skb:kfree_skb", "skb:consume_skb", "kfree_skbmem")
MAX_RECORDING_BYTES = 256 * 1024 * 1024


def load_recording(path) -> list[dict]:
    """Journeys of a JSON Lines file, checked for the fields the UI relies on."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_RECORDING_BYTES:
            raise UsageError(f"recording {p} is larger than {MAX_RECORDING_BYTES >> 20} MiB")
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read recording {p}: {exc.strerror or exc}") from None
    journeys = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            j = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{p}:{n}: not JSON ({exc})") from None
        problem = _check(j)
        if problem:
            raise UsageError(f"{p}:{n}: not a journey: {problem}")
        journeys.append(j)
    if not journeys:
        raise UsageError(f"recording {p} holds no journeys")
    return journeys


def _check(j) -> str | None:
    if not isinstance(j, dict):
        return "not an object"
    for key, kind in (("mark", int), ("start_ns", int), ("hits", list)):
        if not isinstance(j.get(key), kind):
            return f"{key} missing or not {kind.__name__}"
    if not j["hits"]:
        return "no hits"
    for h in j["hits"]:
        if not isinstance(h, dict) or not isinstance(h.get("func"), str) or not isinstance(h.get("t_ns"), int):
            return "a hit without func or t_ns"
    return None


def functions_of(journeys) -> list[str]:
    """Distinct function names of a recording, sorted."""
    return sorted({h["func"] for j in journeys for h in j["hits"]})


class ReplayTracer:
    def __init__(self, config, on_journey, on_progress=None, *, path, speed: float = 1.0,
                 repeat: int = 1, max_gap: float = 0.25, attach_seconds: float = 0.4,
                 max_per_poll: int = 500):
        self.config = config
        self.on_journey = on_journey
        self.on_progress = on_progress or (lambda stage, done, total: None)
        self.path = path
        self.speed = float(speed)
        self.repeat = max(1, int(repeat))
        self.max_gap = max_gap
        self.attach_seconds = attach_seconds
        self.max_per_poll = max_per_poll
        self.state = "idle"
        self.attached: list[str] = []
        self.events = 0
        self.journeys = 0
        self._lock = threading.Lock()
        self._stopped = False
        self._cancel = threading.Event()
        self._items: list[dict] = []
        self._offsets: list[float] = []
        self._pass_seconds = 0.0
        self._pass_ns = 0
        self._next = 0            # index over repeat * len(items)
        self._t0 = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.state = "preparing"
        self.on_progress("reading recording", 0, 0)
        recorded = load_recording(self.path)
        cfg = self.config
        want = cfg.mark & cfg.mask
        items = []
        for j in recorded:
            if (j["mark"] & cfg.mask) != want:
                continue
            kept = self._filter(j)
            if kept is not None:
                items.append(kept)
        funcs = functions_of(items) if items else []
        if not funcs:
            regex = f" and functions matching {cfg.regex!r}" if cfg.regex else ""
            raise UsageError(f"no journey in the recording has mark 0x{cfg.mark:x}/0x{cfg.mask:x}{regex}")
        self.state = "attaching"
        step = self.attach_seconds / len(funcs)
        for i, name in enumerate(funcs, 1):
            if self._stopped:
                break
            if self._cancel.is_set():
                self.stop()
                raise Cancelled("stopped before tracing started")
            self.attached.append(name)
            self.on_progress("attaching", i, len(funcs))
            if step:
                self._cancel.wait(step)
        self._items = items
        first = items[0]["start_ns"]
        offsets, prev, off = [], first, 0.0
        for j in items:
            off += min(max(j["start_ns"] - prev, 0) / 1e9, self.max_gap)
            prev = j["start_ns"]
            offsets.append(off)
        self._offsets = offsets
        self._pass_seconds = off + 0.05
        last = max(j["start_ns"] + j["duration_ns"] for j in items)
        self._pass_ns = last - first + 1_000_000
        self._t0 = time.monotonic()
        if not self._stopped:
            self.state = "tracing"

    def _filter(self, j: dict) -> dict | None:
        cfg = self.config
        hits = [h for h in j["hits"] if h["func"] in ALWAYS_TRACED or cfg.matches(h["func"])]
        if not hits:
            return None
        base = hits[0]["t_ns"]
        out = dict(j)
        out["hits"] = [dict(h, t_ns=h["t_ns"] - base) for h in hits]
        out["start_ns"] = j["start_ns"] + base
        out["duration_ns"] = hits[-1]["t_ns"] - base
        return out

    def poll(self, timeout_ms: int = 0) -> None:
        with self._lock:
            if self.state != "tracing":
                return
            released = self._release()
        if not released and timeout_ms:
            time.sleep(timeout_ms / 1000)

    def _release(self) -> int:
        n_items = len(self._items)
        total = n_items * self.repeat
        elapsed = time.monotonic() - self._t0
        released = 0
        while self._next < total and released < self.max_per_poll:
            rnd, i = divmod(self._next, n_items)
            due = 0.0 if self.speed <= 0 else (rnd * self._pass_seconds + self._offsets[i]) / self.speed
            if due > elapsed:
                break
            j = dict(self._items[i])
            self.journeys += 1
            j["id"] = self.journeys
            j["start_ns"] = j["start_ns"] + rnd * self._pass_ns
            self.events += len(j["hits"])
            self._next += 1
            released += 1
            self.on_journey(j)
        return released

    def cancel(self) -> None:
        """Like Tracer.cancel: a start in another thread stops attaching and raises Cancelled."""
        self._cancel.set()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self.state = "stopped"

    def stats(self) -> dict:
        return {"state": self.state, "backend": "replay", "attached": len(self.attached), "failed": 0,
                "failed_funcs": {}, "events": self.events, "lost": 0, "journeys": self.journeys}
