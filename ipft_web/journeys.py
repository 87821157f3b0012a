"""Hits grouped by packet (skb address) into journeys, emitted when the skb is freed or goes idle.

The assembler knows nothing about BPF: it is fed `Hit`s and calls `on_journey(dict)` with the
Journey JSON of docs/design.md. Memory is bounded: at most `max_open` journeys in flight (the
oldest is emitted with end="evicted" when a new one would exceed it), `max_hits` hits each, and
`max_open_hits` hits in all of them together (oldest journeys evicted first).
"""
from __future__ import annotations

import re
import time
from collections import OrderedDict

from .records import field, record

# After skb:consume_skb / skb:kfree_skb the packet is being freed; when kfree_skbmem is traced too,
# the journey stays open for the free path's own functions and ends at kfree_skbmem.
FREE_PATH = re.compile(r"free|release|consume|destruct|cache_put|defer|skb_unref|dst_release")
CLOSING_GRACE_NS = 200_000_000


@record(slots=True)
class Hit:
    skb: int
    ts: int              # CLOCK_MONOTONIC ns
    func: str
    kind: str            # "kprobe" | "tracepoint" | "kprobe-multi" | "fentry"
    cpu: int
    len: int
    mark: int
    ifindex: int
    dev: str | None
    netns: int
    tuple: dict | None = None
    ip_id: int | None = None        # IPv4 identification, None for other packets
    end: str | None = None          # None, "free" (memory freed), "freeing" (consume/kfree_skb)
    drop_reason: str | None = None
    drop_func: str | None = None
    fields: dict | None = None      # {"skb->len": 84, ...} when the session asked for fields


@record
class _Open:
    id: int
    first: Hit
    hits: list = field(default_factory=list)
    last_ts: int = 0
    tuple: dict | None = None
    dev_hit: Hit | None = None
    drop_reason: str | None = None
    drop_func: str | None = None
    closing_since: int | None = None
    truncated: int = 0
    ip_id: int | None = None


class Assembler:
    def __init__(self, on_journey, idle_timeout: float = 1.0, free_traced: bool = False,
                 max_open: int = 4096, max_hits: int = 4096, max_open_hits: int = 500_000):
        self.on_journey = on_journey
        self.idle_ns = int(idle_timeout * 1e9)
        self.free_traced = free_traced
        self.max_open = max_open
        self.max_hits = max_hits
        self.max_open_hits = max_open_hits   # hits held in all open journeys together
        self.open_hits = 0
        self.latest_ts = 0                   # the newest hit's time (CLOCK_MONOTONIC ns)
        self.open: OrderedDict[int, _Open] = OrderedDict()
        self.next_id = 1
        self.emitted = 0

    # -- input ---------------------------------------------------------------------------
    def feed(self, hit: Hit) -> None:
        if hit.ts > self.latest_ts:
            self.latest_ts = hit.ts
        j = self.open.get(hit.skb)
        if j is not None and j.closing_since is not None and not FREE_PATH.search(hit.func):
            # The address was reused by a new packet after the old one was freed.
            self._finish(j, "freed")
            j = None
        elif (j is not None and not self.free_traced and hit.ip_id is not None and j.ip_id is not None
              and hit.ip_id != j.ip_id):
            # No free seen (the tracepoints miss __kfree_skb), but another IPv4 packet now
            # occupies the skb: the old journey ended unseen.
            self._finish(j, "reused")
            j = None
        if j is None:
            if len(self.open) >= self.max_open:
                self._finish(next(iter(self.open.values())), "evicted")
            j = _Open(id=self.next_id, first=hit)
            self.next_id += 1
            self.open[hit.skb] = j
        else:
            self.open.move_to_end(hit.skb)
        if len(j.hits) < self.max_hits:
            j.hits.append(hit)
            self.open_hits += 1
        else:
            j.truncated += 1
        j.last_ts = hit.ts
        if j.tuple is None and hit.tuple is not None:
            j.tuple = hit.tuple
        if j.ip_id is None:
            j.ip_id = hit.ip_id
        if j.dev_hit is None and hit.ifindex:
            j.dev_hit = hit
        if hit.drop_reason and j.drop_reason is None:
            j.drop_reason, j.drop_func = hit.drop_reason, hit.drop_func
        if hit.end == "free" or (hit.end == "freeing" and not self.free_traced):
            self._finish(j, "freed")
        elif hit.end == "freeing":
            j.closing_since = hit.ts
        while self.open_hits > self.max_open_hits and self.open:   # memory bound: oldest out first
            self._finish(next(iter(self.open.values())), "evicted")

    def tick(self, now_ns: int | None = None) -> None:
        """Emit journeys idle for longer than the timeout (and freed ones past their grace)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        for j in list(self.open.values()):
            if j.closing_since is not None and now - j.last_ts > CLOSING_GRACE_NS:
                self._finish(j, "freed")
            elif now - j.last_ts > self.idle_ns:
                self._finish(j, "timeout")

    def flush(self, end: str = "exit") -> None:
        for j in list(self.open.values()):
            self._finish(j, "freed" if j.closing_since is not None else end)

    # -- output --------------------------------------------------------------------------
    def _finish(self, j: _Open, end: str) -> None:
        del self.open[j.first.skb]
        self.open_hits -= len(j.hits)
        self.emitted += 1
        self.on_journey(to_json(j, end))


def _hit_json(h: Hit, start: int) -> dict:
    out = {"func": h.func, "kind": h.kind, "t_ns": h.ts - start, "cpu": h.cpu, "len": h.len,
           "mark": h.mark, "ifindex": h.ifindex, "dev": h.dev, "netns": h.netns}
    if h.fields is not None:
        out["fields"] = h.fields
    return out


def to_json(j: _Open, end: str) -> dict:
    start = j.hits[0].ts
    dev = j.dev_hit or j.first
    out = {
        "id": j.id,
        "skb": f"0x{j.first.skb:x}",
        "mark": j.first.mark,
        "tuple": j.tuple,
        "dev": dev.dev,
        "ifindex": dev.ifindex,
        "netns": dev.netns,
        "start_ns": start,
        "duration_ns": j.hits[-1].ts - start,
        "hits": [_hit_json(h, start) for h in j.hits],
        "drop_reason": j.drop_reason,
        "drop_func": j.drop_func,
        "end": end,
    }
    if j.truncated:
        out["truncated_hits"] = j.truncated
    return out
