"""A session's journeys as JSON Lines, or as Chrome trace-event JSON for Perfetto / chrome://tracing.

Trace layout: one process (the session), one thread track per kernel layer (lanes ordered as in
data/layers.json), each hit a complete ("X") slice lasting until the packet's next hit, clipped so
that slices on one track never overlap (a track is a strict sequence, which is what the importers
need); the hits of one journey are chained by a v2 flow (bind_id + flow_in/flow_out) so Perfetto
draws arrows from hit to hit. A drop is an instant event on the skb lifecycle track.
"""
from __future__ import annotations

import json

from .. import __version__
from ..output import describe_tuple

PID = 1


def jsonl(texts, pause=None, every: int = 500):
    """Chunks of a JSON Lines body from journey JSON texts."""
    chunk = []
    for n, text in enumerate(texts, 1):
        chunk.append(text)
        if n % every == 0:
            yield "\n".join(chunk) + "\n"
            chunk = []
            if pause:
                pause()
    if chunk:
        yield "\n".join(chunk) + "\n"


def _durations(journeys_factory, table):
    """Pass 1: per journey, each hit's duration (ns), clipped against the next slice on its track."""
    durs: list[list[int]] = []
    tracks: dict[str, list] = {}
    base = None
    for jidx, j in enumerate(journeys_factory()):
        hits = j["hits"]
        start = j["start_ns"]
        base = start if base is None else min(base, start)
        d = []
        for hidx, h in enumerate(hits):
            nxt = hits[hidx + 1]["t_ns"] if hidx + 1 < len(hits) else h["t_ns"]
            d.append(max(nxt - h["t_ns"], 0))
            tracks.setdefault(table.classify(h["func"]), []).append((start + h["t_ns"], jidx, hidx))
        durs.append(d)
    for events in tracks.values():
        events.sort()
        for (t, jidx, hidx), (t_next, _, _) in zip(events, events[1:]):
            if t + durs[jidx][hidx] > t_next:
                durs[jidx][hidx] = t_next - t
    return durs, base or 0


def _us(ns: int) -> float:
    return round(ns / 1000, 3)


def chrome_trace(journeys_factory, table, session: dict, pause=None):
    """Chunks of the trace JSON. `journeys_factory()` yields the session's journeys (called twice)."""
    durs, base = _durations(journeys_factory, table)
    tid = {layer: i + 1 for i, layer in enumerate(table.ids)}
    cfg = session.get("config") or {}
    title = f"ipft-web session {session['id']}"
    if isinstance(cfg.get("mark"), int):
        title += f" (mark 0x{cfg['mark']:x}/0x{cfg.get('mask', 0xffffffff):x})"
    meta = [{"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": title}}]
    for layer in table.layers:
        t = tid[layer["id"]]
        meta.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": t, "args": {"name": layer["label"]}})
        meta.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": t, "args": {"sort_index": t}})
    other = {"tool": f"ipft-web {__version__}", "session": session["id"], "config": cfg,
             "base_ns": base, "note": "ts are microseconds since the first hit of the session (CLOCK_MONOTONIC)"}
    yield '{"displayTimeUnit":"ns","otherData":' + json.dumps(other) + ',"traceEvents":[\n'
    yield ",\n".join(json.dumps(e) for e in meta)
    for jidx, j in enumerate(journeys_factory()):
        events = _journey_events(j, jidx, durs[jidx], base, table, tid)
        yield ",\n" + ",\n".join(json.dumps(e, separators=(",", ":")) for e in events)
        if pause and jidx % 200 == 199:
            pause()
    yield "\n]}\n"


def _journey_events(j, jidx, durs, base, table, tid):
    hits = j["hits"]
    start = j["start_ns"]
    what = describe_tuple(j.get("tuple"))
    flow = jidx + 1
    out = []
    for hidx, h in enumerate(hits):
        layer = table.classify(h["func"])
        prev = hits[hidx - 1]["t_ns"] if hidx else h["t_ns"]
        ev = {"ph": "X", "name": h["func"], "cat": layer, "pid": PID, "tid": tid[layer],
              "ts": _us(start + h["t_ns"] - base), "dur": _us(durs[hidx]),
              "args": {"journey": j.get("id"), "packet": what, "skb": j.get("skb"), "hit": hidx + 1,
                       "t_ns": h["t_ns"], "dt_ns": h["t_ns"] - prev, "cpu": h.get("cpu"), "len": h.get("len"),
                       "dev": h.get("dev"), "ifindex": h.get("ifindex"), "netns": h.get("netns"),
                       "kind": h.get("kind")}}
        if len(hits) > 1:
            ev["bind_id"] = flow
            if hidx > 0:
                ev["flow_in"] = True
            if hidx < len(hits) - 1:
                ev["flow_out"] = True
        out.append(ev)
    if j.get("drop_reason"):
        where = next((h for h in hits if h["func"] in ("skb:kfree_skb", "kfree_skb_reason")), hits[-1])
        out.append({"ph": "i", "s": "t", "name": f"DROP {j['drop_reason']}", "cat": "drop", "pid": PID,
                    "tid": tid[table.classify(where["func"])], "ts": _us(start + where["t_ns"] - base),
                    "args": {"journey": j.get("id"), "packet": what, "reason": j["drop_reason"],
                             "func": j.get("drop_func")}})
    return out
