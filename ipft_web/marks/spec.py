"""A marking rule as the user asked for it, validated field by field (API body and CLI alike).

Nothing here touches the machine except `netns`, which must name an existing /run/netns entry.
Every refusal is a `UsageError` with one line that says which field and why.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from ..config import U32, parse_u32
from ..errors import UsageError

KEYS = ("direction", "family", "proto", "src", "dst", "sport", "dport", "iif", "oif", "netns",
        "rate", "mark", "mask", "tool")
DIRECTIONS = ("rx", "tx", "both")
FAMILIES = ("ipv4", "ipv6", "both")
PROTOS = ("tcp", "udp", "icmp", "icmpv6", "any")
TOOLS = ("auto", "iptables", "nft")
RATE_UNITS = {"s": "second", "sec": "second", "second": "second", "m": "minute", "min": "minute",
              "minute": "minute", "h": "hour", "hour": "hour", "d": "day", "day": "day"}
MAX_RATE = 10000            # xt_limit refuses faster than 10000/second
MAX_TEXT = 64
NETNS_DIR = "/run/netns"

# Linux allows almost any byte in an interface name; a rule field allows a safe subset and never a
# leading '-' (it would read as an option to iptables).
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
_NETNS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_ADDR = re.compile(r"[0-9A-Fa-f.:]+(/[0-9]{1,3})?")
_PORT = re.compile(r"([0-9]{1,5})(?:[-:]([0-9]{1,5}))?")
_RATE = re.compile(r"([0-9]{1,6})(?:/([a-z]{1,6}))?")


def _text(value, what: str, allow_int: bool = False):
    """A short printable-ASCII string without spaces (or None when absent/empty)."""
    if value is None:
        return None
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a string")
    text = value.strip(" ")
    if text == "":
        return None
    if len(text) > MAX_TEXT:
        raise UsageError(f"{what} is longer than {MAX_TEXT} characters")
    if not all(0x21 <= ord(c) <= 0x7E for c in text):
        raise UsageError(f"{what} may only contain printable ASCII without spaces, got {value!r:.50}")
    return text


def _choice(value, what: str, choices, default: str) -> str:
    text = _text(value, what)
    if text is None:
        return default
    text = text.lower()
    if text not in choices:
        raise UsageError(f"{what} must be one of {', '.join(choices)}, got {value!r:.40}")
    return text


def parse_address(value, what: str):
    """An IPv4/IPv6 address or prefix (host bits must be zero) -> ip_network, or None."""
    text = _text(value, what)
    if text is None:
        return None
    if not _ADDR.fullmatch(text):
        raise UsageError(f"{what} must be an IPv4/IPv6 address or prefix like 10.0.0.0/8, got {value!r:.50}")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(text, strict=False)
            raise UsageError(f"{what} {text} has host bits set; did you mean {loose}?") from None
        raise UsageError(f"{what} is not a valid address or prefix: {text!r:.50}") from None


def parse_port(value, what: str):
    """A port 0..65535 or a range "LO-HI" / "LO:HI" -> (lo, hi), or None."""
    if isinstance(value, bool):
        raise UsageError(f"{what} must be a port number or range like 8000-8080")
    text = _text(value, what, allow_int=True)
    if text is None:
        return None
    m = _PORT.fullmatch(text)
    if not m:
        raise UsageError(f"{what} must be a port number or range like 8000-8080, got {value!r:.40}")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if lo > 65535 or hi > 65535:
        raise UsageError(f"{what} must be between 0 and 65535, got {text}")
    if lo > hi:
        raise UsageError(f"{what} range {text} is backwards (low end first)")
    return (lo, hi)


def parse_ifname(value, what: str):
    text = _text(value, what)
    if text is None:
        return None
    if text in (".", "..") or not _IFNAME.fullmatch(text):
        raise UsageError(f"{what} must be an interface name (1-15 of A-Z a-z 0-9 _ . -, not starting "
                         f"with - or .), got {value!r:.40}")
    return text


def parse_netns(value, what: str = "netns", netns_dir: str = NETNS_DIR):
    """The name of an existing named network namespace (ip netns), or None for this namespace."""
    text = _text(value, what)
    if text is None:
        return None
    if text in (".", "..") or not _NETNS.fullmatch(text):
        raise UsageError(f"{what} must be a network namespace name (A-Z a-z 0-9 _ . -), got {value!r:.40}")
    if not os.path.isfile(os.path.join(netns_dir, text)):
        raise UsageError(f"{what} {text!r} does not exist (see `ip netns list`)")
    return text


def parse_rate(value, what: str = "rate"):
    """At most N packets per unit: N (per second) or "N/second|minute|hour|day" -> (n, unit), or None."""
    if isinstance(value, bool):
        raise UsageError(f"{what} must be a number of packets per second or like 10/minute")
    text = _text(value, what, allow_int=True)
    if text is None:
        return None
    m = _RATE.fullmatch(text.lower())
    if not m or (m.group(2) is not None and m.group(2) not in RATE_UNITS):
        raise UsageError(f"{what} must be packets per second (e.g. 10) or like 10/minute, got {value!r:.40}")
    n = int(m.group(1))
    if not 1 <= n <= MAX_RATE:
        raise UsageError(f"{what} must be between 1 and {MAX_RATE} packets per unit, got {n}")
    return (n, RATE_UNITS[m.group(2) or "s"])


def _family_of(net) -> str:
    return "ipv4" if net.version == 4 else "ipv6"


@dataclass(frozen=True)
class MarkSpec:
    direction: str            # rx | tx | both
    family: str               # ipv4 | ipv6 | both, narrowed by addresses and icmp/icmpv6
    proto: str                # tcp | udp | icmp | icmpv6 | any
    mark: int                 # the value set, already masked (mark & mask)
    mask: int
    src: object = None        # ipaddress network or None
    dst: object = None
    sport: tuple | None = None
    dport: tuple | None = None
    iif: str | None = None
    oif: str | None = None
    netns: str | None = None
    rate: tuple | None = None  # (n, "second"|"minute"|"hour"|"day")
    tool: str = "auto"

    @property
    def families(self) -> tuple:
        return ("ipv4", "ipv6") if self.family == "both" else (self.family,)

    @property
    def chains(self) -> tuple:
        """Netfilter hooks: rx = PREROUTING, tx = OUTPUT (both in the raw table / at raw priority)."""
        return {"rx": ("PREROUTING",), "tx": ("OUTPUT",), "both": ("PREROUTING", "OUTPUT")}[self.direction]

    def to_dict(self) -> dict:
        def addr(net):
            if net is None:
                return None
            return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)

        def port(p):
            if p is None:
                return None
            return str(p[0]) if p[0] == p[1] else f"{p[0]}-{p[1]}"

        return {"direction": self.direction, "family": self.family, "proto": self.proto,
                "src": addr(self.src), "dst": addr(self.dst), "sport": port(self.sport),
                "dport": port(self.dport), "iif": self.iif, "oif": self.oif, "netns": self.netns,
                "rate": f"{self.rate[0]}/{self.rate[1]}" if self.rate else None,
                "mark": f"0x{self.mark:08x}", "mask": f"0x{self.mask:08x}", "tool": self.tool}


def parse_spec(data, default_mark=None, default_mask=U32, netns_dir: str = NETNS_DIR) -> MarkSpec:
    """Validate a rule (a dict with the keys of KEYS); the mark defaults to the session's mark/mask."""
    if not isinstance(data, dict):
        raise UsageError("a marking rule must be a JSON object")
    for key in data:
        if key not in KEYS:
            raise UsageError(f"unknown field {str(key)!r:.40} (fields: {', '.join(KEYS)})")

    direction = _choice(data.get("direction"), "direction", DIRECTIONS, "")
    family = _choice(data.get("family"), "family", FAMILIES, "both")
    proto = _choice(data.get("proto"), "proto", PROTOS, "any")
    tool = _choice(data.get("tool"), "tool", TOOLS, "auto")
    src = parse_address(data.get("src"), "src")
    dst = parse_address(data.get("dst"), "dst")
    sport = parse_port(data.get("sport"), "sport")
    dport = parse_port(data.get("dport"), "dport")
    iif = parse_ifname(data.get("iif"), "iif")
    oif = parse_ifname(data.get("oif"), "oif")
    rate = parse_rate(data.get("rate"))
    if not direction:   # not given: follows from the interface, else both hooks
        direction = "rx" if iif and not oif else "tx" if oif and not iif else "both"

    mark_in = data.get("mark")
    if mark_in is None or mark_in == "":
        if default_mark is None:
            raise UsageError("mark is required (e.g. 0xdeadbeef): no session mark to default to")
        mark_in = default_mark
    mask_in = data.get("mask")
    if mask_in is None or mask_in == "":
        mask_in = default_mask if default_mask is not None else U32
    mark = parse_u32(_text(mark_in, "mark") if isinstance(mark_in, str) else mark_in, "mark")
    mask = parse_u32(_text(mask_in, "mask") if isinstance(mask_in, str) else mask_in, "mask")
    if mask == 0:
        raise UsageError("mask 0 compares no bits: every packet would match")
    if mark & mask == 0:
        raise UsageError("mark & mask is 0, which every unmarked packet has: choose a nonzero mark")

    # the address family follows from the family field, the addresses and icmp/icmpv6
    allowed = {"ipv4", "ipv6"} if family == "both" else {family}
    reasons = []
    for what, net in (("src", src), ("dst", dst)):
        if net is not None:
            reasons.append((f"{what} {net}", {_family_of(net)}))
    if proto == "icmp":
        reasons.append(("proto icmp", {"ipv4"}))
    elif proto == "icmpv6":
        reasons.append(("proto icmpv6", {"ipv6"}))
    for why, fams in reasons:
        if not allowed & fams:
            given = f"family {family}" if family != "both" else "the other fields"
            raise UsageError(f"{why} is {'/'.join(sorted(fams))} only, which contradicts {given}")
        allowed &= fams
    family = allowed.pop() if len(allowed) == 1 else "both"

    if (sport or dport) and proto not in ("tcp", "udp"):
        raise UsageError("sport/dport need proto tcp or udp")
    if iif and oif:
        raise UsageError("iif matches received and oif sent packets: one rule cannot have both")
    if iif and direction != "rx":
        raise UsageError("iif matches received packets only: set direction to rx")
    if oif and direction != "tx":
        raise UsageError("oif matches sent packets only: set direction to tx")

    netns = parse_netns(data.get("netns"), netns_dir=netns_dir)

    selective = (proto != "any" or sport or dport or iif or oif
                 or any(n is not None and n.prefixlen > 0 for n in (src, dst)))
    if not selective and rate is None:
        raise UsageError("this rule would mark every packet: add a match (proto, address, port, "
                         "interface) or a rate limit")

    return MarkSpec(direction=direction, family=family, proto=proto, mark=mark & mask, mask=mask,
                    src=src, dst=dst, sport=sport, dport=dport, iif=iif, oif=oif, netns=netns,
                    rate=rate, tool=tool)
