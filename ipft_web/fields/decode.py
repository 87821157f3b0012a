"""A field's raw bytes -> a JSON value, typed from the kernel's type info.

Integers stay numbers (charts need them); enums and flag sets become names; char arrays strings;
__be16/__be32 numbers in host order; addresses text; pointers "0x..." strings. A NULL pointer on
the way, an unset header or a failed read gives None (JSON null).
"""
from __future__ import annotations

import ipaddress
import re

from . import enums
from .paths import Resolved

# Flag sets and enums kept in plain integer members: (struct or None for any, member) -> an
# enumerator of the enum whose names to show.
KNOWN_FLAGS = {
    ("skb_shared_info", "gso_type"): "SKB_GSO_TCPV4",
    ("nf_conn", "status"): "IPS_CONFIRMED",
}
KNOWN_ENUMS = {
    (None, "skc_state"): "TCP_ESTABLISHED",
}
SIGNED = frozenset(("char", "signed char", "short", "short int", "int", "long", "long int", "long long",
                    "long long int", "s8", "s16", "s32", "s64", "__s8", "__s16", "__s32", "__s64",
                    "ssize_t", "loff_t", "ktime_t", "time64_t", "pid_t"))
_QUAL = re.compile(r"\b(const|volatile)\s+")


def _base_type(type_name: str) -> str:
    return _QUAL.sub("", type_name).strip()


class Decoder:
    """Decodes one resolved field: `decoder(raw16: bytes) -> JSON value`."""

    def __init__(self, typedb, field: Resolved):
        self.field = field
        m = field.member
        self.type = _base_type(m.type_name)
        self.mode, self.values = self._choose(typedb, field)

    @property
    def numeric(self) -> bool:
        return self.mode in ("int", "sint", "be", "bits")

    def _choose(self, typedb, f: Resolved):
        m, spec, t = f.member, f.spec, self.type
        if spec.fmt in ("flags", "enum"):
            values = enums.find(typedb, spec.fmt_arg)
            if not values:
                from ..errors import UsageError
                raise UsageError(f"field {spec.name}: no enum named {spec.fmt_arg} and no enum with such an "
                                 "enumerator")
            return spec.fmt, values
        if spec.fmt:
            return spec.fmt, None
        if m.bit_size:
            return "bits", None
        key = (f.struct, m.name)
        if key not in KNOWN_FLAGS and key not in KNOWN_ENUMS:
            key = (None, m.name)
        if key in KNOWN_FLAGS or key in KNOWN_ENUMS:
            values = enums.find(typedb, KNOWN_FLAGS.get(key) or KNOWN_ENUMS[key])
            if values:
                return ("flags" if key in KNOWN_FLAGS else "enum"), values
        if m.kind == "enum":
            name = t.split()[-1] if t.startswith("enum ") else t
            values = enums.find(typedb, name) if name and name != "(anon)" else None
            return ("enum", values) if values else ("int", None)
        if m.kind == "ptr":
            return "ptr", None
        if m.kind == "array":
            if re.fullmatch(r"(char|signed char)\[\d+\]", t):
                return "str", None
            if re.fullmatch(r"(unsigned char|u8|__u8)\[6\]", t):
                return "mac", None
            return "hex", None
        if m.kind in ("struct", "union"):
            if t == "struct in6_addr":
                return "ipv6", None
            return "hex", None
        if m.kind == "float":
            return "hex", None
        if t in ("bool", "_Bool"):
            return "bool", None
        if t.startswith("__be") or t.startswith("__le"):
            if t == "__be32" and m.name.endswith("addr"):
                return "ipv4", None
            return ("be" if t.startswith("__be") else "int"), None
        return ("sint" if t in SIGNED else "int"), None

    def __call__(self, raw: bytes):
        f = self.field
        raw = raw[:f.size]
        mode = self.mode
        if f.member.bit_size:
            v = (int.from_bytes(raw, "little") >> f.member.bit_offset) & ((1 << f.member.bit_size) - 1)
        elif mode == "be":
            v = int.from_bytes(raw, "big")
        else:
            v = int.from_bytes(raw, "little")
        if mode in ("int", "bits", "be", "dec"):
            return v
        if mode == "sint":
            bits = 8 * len(raw)
            return v - (1 << bits) if bits and v >> (bits - 1) else v
        if mode == "bool":
            return bool(v)
        if mode == "flags":
            return enums.flags_text(self.values, v)
        if mode == "enum":
            return enums.enum_text(self.values, v)
        if mode == "ptr":
            return f"0x{v:x}"
        if mode == "str":
            return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        if mode == "ipv4":
            return str(ipaddress.IPv4Address(raw[:4].ljust(4, b"\0")))
        if mode == "ipv6":
            return str(ipaddress.IPv6Address(raw[:16].ljust(16, b"\0")))
        if mode == "mac":
            return ":".join(f"{b:02x}" for b in raw[:6])
        if mode == "hex":
            if len(raw) <= 8 and f.member.kind in ("int", "enum", "ptr") and not f.member.bit_size:
                return f"0x{v:x}"
            return raw.hex() + ("..." if f.truncated else "")
        return v


class FieldSet:
    """The resolved fields of one session: decodes an event's field area into {name: value}."""

    def __init__(self, typedb, resolved: list[Resolved]):
        self.fields = list(resolved)
        self.decoders = [Decoder(typedb, f) for f in self.fields]

    def __bool__(self) -> bool:
        return bool(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def decode(self, area: bytes, max_fields: int = 8, size: int = 16) -> dict | None:
        """`area` = u8 fstate[max_fields] + the values (size bytes each). None when absent."""
        if not self.fields or len(area) < max_fields:
            return None
        out = {}
        for i, dec in enumerate(self.decoders):
            start = max_fields + i * size
            raw = area[start:start + size]
            if area[i] != 0 or len(raw) < size:
                out[dec.field.name] = None
            else:
                try:
                    out[dec.field.name] = dec(raw)
                except (ValueError, OverflowError):
                    out[dec.field.name] = None
        return out

    def info(self) -> list[dict]:
        """What a UI needs to show the fields: name, C type, whether it can be charted."""
        return [{"name": d.field.name, "type": d.field.member.type_name, "numeric": d.numeric,
                 "format": d.mode} for d in self.decoders]
