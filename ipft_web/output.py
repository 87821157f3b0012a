"""Journeys as text, JSON Lines, or an aggregate of distinct paths."""
from __future__ import annotations

import json
from collections import Counter

ICMP_TYPES = {("icmp", 8): "echo-request", ("icmp", 0): "echo-reply", ("icmp", 3): "unreachable",
              ("icmp", 11): "time-exceeded", ("icmpv6", 128): "echo-request", ("icmpv6", 129): "echo-reply",
              ("icmpv6", 1): "unreachable", ("icmpv6", 135): "neighbour-solicit",
              ("icmpv6", 136): "neighbour-advert", ("icmpv6", 133): "router-solicit"}


def describe_tuple(t: dict | None) -> str:
    if not t:
        return "(no IP header seen)"
    proto = t.get("proto")
    if t.get("sport") is not None:
        src, dst = t["src"], t["dst"]
        if t["family"] == "ipv6":
            src, dst = f"[{src}]", f"[{dst}]"
        return f"{t['family']} {proto} {src}:{t['sport']} > {dst}:{t['dport']}"
    text = f"{t['family']} {proto} {t['src']} > {t['dst']}"
    if t.get("icmp_type") is not None:
        text += " " + ICMP_TYPES.get((proto, t["icmp_type"]), f"type {t['icmp_type']} code {t['icmp_code']}")
    return text


def _us(ns: int) -> str:
    return f"{ns / 1000:.3f}us"


def _value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    text = str(v)
    return json.dumps(text) if (not text or any(c.isspace() or c in "\"=" for c in text)) else text


def format_text(j: dict) -> str:
    head = (f"{j['skb']} {describe_tuple(j.get('tuple'))}  mark 0x{j['mark']:x}"
            f"  dev {j.get('dev') or '-'}  netns {j.get('netns') or '-'}"
            f"  ({len(j['hits'])} hits, {_us(j['duration_ns'])}, {j['end']})")
    lines = [head]
    for h in j["hits"]:
        line = f"  +{h['t_ns'] / 1000:>10.3f}us  cpu{h['cpu']:<3} len {h['len']:<6} {h.get('dev') or '-':<10} {h['func']}"
        if h.get("fields"):
            line += "  " + " ".join(f"{k}={_value(v)}" for k, v in h["fields"].items())
        lines.append(line)
    if j.get("truncated_hits"):
        lines.append(f"  ... {j['truncated_hits']} more hits not kept")
    if j.get("drop_reason"):
        where = f" in {j['drop_func']}" if j.get("drop_func") else ""
        lines.append(f"  DROPPED: {j['drop_reason']}{where}")
    return "\n".join(lines) + "\n"


def format_json(j: dict) -> str:
    return json.dumps(j, separators=(",", ":")) + "\n"


def path_of(j: dict) -> tuple:
    return tuple(h["func"] for h in j["hits"])


class Aggregate:
    """How many journeys took each distinct path, and the most-hit functions."""

    def __init__(self):
        self.paths: Counter = Counter()
        self.funcs: Counter = Counter()
        self.drops: Counter = Counter()
        self.journeys = 0

    def add(self, j: dict) -> None:
        self.journeys += 1
        self.paths[path_of(j)] += 1
        self.funcs.update(path_of(j))
        if j.get("drop_reason"):
            self.drops[(j["drop_reason"], j.get("drop_func"))] += 1

    def as_dict(self, top: int = 50) -> dict:
        return {
            "journeys": self.journeys,
            "paths": [{"count": n, "path": list(p)} for p, n in self.paths.most_common(top)],
            "functions": [{"func": f, "hits": n} for f, n in self.funcs.most_common(top)],
            "drops": [{"reason": r, "func": f, "count": n} for (r, f), n in self.drops.most_common(top)],
        }

    def format_text(self, top: int = 50) -> str:
        lines = [f"{self.journeys} journeys, {len(self.paths)} distinct paths"]
        for path, n in self.paths.most_common(top):
            lines.append(f"{n:>8}  ({len(path)} hits) " + " -> ".join(path))
        if self.drops:
            lines.append("drops:")
            for (reason, func), n in self.drops.most_common(top):
                lines.append(f"{n:>8}  {reason}" + (f" in {func}" if func else ""))
        return "\n".join(lines) + "\n"
