"""Enums by type name or by one of their enumerators.

Many kernel flag sets are anonymous enums (SKB_GSO_TCPV4, TCP_ESTABLISHED), which the TypeDB's
enum(name) cannot find; this module scans the BTF records for them. DWARF type info answers named
enums only.
"""
from __future__ import annotations

import threading

_cache: dict = {}
_lock = threading.Lock()


def _dbs(typedb):
    primary = getattr(typedb, "primary", None)
    if primary is None:
        return [typedb]
    return [primary, *getattr(typedb, "modules", {}).values()]


def _by_enumerator(db, name: str) -> dict | None:
    own_ids = getattr(db, "own_ids", None)
    if own_ids is None:
        return None
    for tid in own_ids():
        if db._kind(tid) == "enum":
            values = db._enum_values(tid)
            if any(n == name for n, _ in values):
                return dict(values)
    return None


def find(typedb, name: str) -> dict[str, int] | None:
    """Enumerators of enum `name`, or of the enum that has an enumerator called `name`."""
    key = (id(typedb), name)
    with _lock:
        if key in _cache:
            return _cache[key]
    try:
        values = typedb.enum(name)
    except KeyError:
        values = None
    if values is None:
        for db in _dbs(typedb):
            values = _by_enumerator(db, name)
            if values:
                break
    with _lock:
        _cache[key] = values
    return values


def single_bits(values: dict[str, int]) -> list[tuple[str, int]]:
    """(name, bit value) of the enumerators that are one bit each, first name per bit; "*_BIT"
    names (bit numbers, as in enum ip_conntrack_status) are left out."""
    seen, out = set(), []
    for name, v in values.items():
        if v > 0 and v & (v - 1) == 0 and not name.endswith("_BIT") and v not in seen:
            seen.add(v)
            out.append((name, v))
    return out


def flags_text(values: dict[str, int], value: int) -> str:
    """"SKB_GSO_TCPV4|SKB_GSO_PARTIAL", "0", or names plus the unnamed bits as hex."""
    if value == 0:
        return "0"
    names, rest = [], value
    for name, bit in single_bits(values):
        if rest & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join(names)


def enum_text(values: dict[str, int], value: int):
    for name, v in values.items():
        if v == value:
            return name
    return value
