"""Events from the ring buffer (struct ipft_event in bpf/ipft.bpf.c) decoded into hits."""
from __future__ import annotations

import struct

from .records import record

# Must match struct ipft_event up to fstate: 4 x u64, 6 x u32, 4 x u8, u8[4], u16, u16, u32, u8[16],
# u8[16], char[16]. Events of sessions with fields carry u8 fstate[8] + 16 bytes per field after it.
EVENT = struct.Struct("<4Q6I4B4sHHI16s16s16s")
EVENT_SIZE = EVENT.size  # 120

KIND_KPROBE, KIND_TP, KIND_DROP, KIND_CONSUME, KIND_FREE = range(5)

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 47: "gre", 50: "esp"}


@record(slots=True)
class RawEvent:
    skb: int
    ts: int
    addr: int
    location: int
    cpu: int
    len: int
    mark: int
    ifindex: int
    netns: int
    reason: int
    family: int
    l4proto: int
    kind: int
    l4: bytes
    ip_id: int
    saddr: bytes
    daddr: bytes
    ifname: bytes
    fields: bytes = b""   # fstate[8] + values, when the session asked for fields


def decode_from(buf, offset: int, size: int) -> RawEvent:
    """The event of `size` bytes at `offset` in `buf` (the ring buffer's pages: read in place)."""
    (skb, ts, addr, location, cpu, length, mark, ifindex, netns, reason,
     family, l4proto, kind, _pad, l4, ip_id, _pad2, _pad3, saddr, daddr, ifname) = EVENT.unpack_from(buf, offset)
    fields = bytes(buf[offset + EVENT_SIZE:offset + size]) if size > EVENT_SIZE else b""
    return RawEvent(skb, ts, addr, location, cpu, length, mark, ifindex, netns, reason,
                    family, l4proto, kind, l4, ip_id, saddr, daddr, ifname, fields)


_tuples: dict = {}
_names: dict = {}


def tuple_of(ev: RawEvent) -> dict | None:
    """The L3/L4 tuple as JSON-ready dict, or None when the event had no IP header.

    Memoised on the raw bytes: a packet's hits repeat the same tuple, and formatting addresses
    is the most expensive part of decoding an event."""
    if not ev.family:
        return None
    key = (ev.family, ev.l4proto, ev.l4, ev.saddr, ev.daddr)
    t = _tuples.get(key)
    if t is None:
        if len(_tuples) > 8192:
            _tuples.clear()
        t = _tuples[key] = _tuple_of(ev)
    return t


def _tuple_of(ev: RawEvent) -> dict | None:
    if ev.family == 4:   # dotted quads by hand: ipaddress is imported for IPv6 only (a module less at start)
        src, dst = "%d.%d.%d.%d" % tuple(ev.saddr[:4]), "%d.%d.%d.%d" % tuple(ev.daddr[:4])
        fam = "ipv4"
    elif ev.family == 6:
        import ipaddress
        src, dst = str(ipaddress.IPv6Address(ev.saddr)), str(ipaddress.IPv6Address(ev.daddr))
        fam = "ipv6"
    else:
        return None
    out = {"family": fam, "proto": PROTO_NAMES.get(ev.l4proto, ev.l4proto), "src": src, "dst": dst,
           "sport": None, "dport": None, "icmp_type": None, "icmp_code": None}
    if ev.l4proto in (6, 17, 132):
        out["sport"], out["dport"] = struct.unpack(">HH", ev.l4)
    elif ev.l4proto in (1, 58):
        out["icmp_type"], out["icmp_code"] = ev.l4[0], ev.l4[1]
    return out


def ifname_of(ev: RawEvent) -> str | None:
    name = _names.get(ev.ifname)
    if name is None:
        raw = ev.ifname.split(b"\0", 1)[0]
        name = _names[ev.ifname] = raw.decode("ascii", "replace") if raw else ""
        if len(_names) > 4096:
            _names.clear()
    return name or None
