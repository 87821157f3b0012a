"""Field specs: `BASE->member(.member)*(->member(.member)*)*[:FORMAT]`, e.g. `skb->dev->name`,
`shinfo->gso_type`, `sk->__sk_common.skc_state:enum=TCP_ESTABLISHED`.

`parse` checks the syntax only (no kernel needed); `resolve` walks the kernel's type info and
turns the path into integers: a base, up to MAX_DEREFS pointer offsets and a final offset and
size. Those integers are all the BPF program ever sees of a field.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError

MAX_FIELDS = 8      # entries in the BPF map ipft_fields (IPFT_MAX_FIELDS)
VALUE_SIZE = 16     # bytes copied per field (IPFT_FIELD_SIZE)
MAX_DEREFS = 4      # pointers followed after the base (IPFT_FIELD_DEREFS)
MAX_SPEC = 160

# struct ipft_field.base in bpf/ipft.bpf.c
BASE_SKB, BASE_HEAD32, BASE_HEAD16, BASE_PTR_LOW3 = 0, 1, 2, 3

FORMATS = ("dec", "hex", "str", "ipv4", "ipv6", "mac", "bool")
ARG_FORMATS = ("flags", "enum")   # flags=NAME, enum=NAME: an enum type or one of its enumerators

# name -> (struct, how, skb member). how: "skb" | "ptr" (skb->member) | "shinfo" | "header" | "nfct"
BASES = {
    "skb": ("sk_buff", "skb", None),
    "shinfo": ("skb_shared_info", "shinfo", "end"),
    "sk": ("sock", "ptr", "sk"),
    "dev": ("net_device", "ptr", "dev"),
    "eth": ("ethhdr", "header", "mac_header"),
    "iph": ("iphdr", "header", "network_header"),
    "ip6h": ("ipv6hdr", "header", "network_header"),
    "tcph": ("tcphdr", "header", "transport_header"),
    "udph": ("udphdr", "header", "transport_header"),
    "icmph": ("icmphdr", "header", "transport_header"),
    "ct": ("nf_conn", "nfct", "_nfct"),
}

_IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_SEGMENT = rf"{_IDENT}(?:\.{_IDENT})*"
_PATH_RE = re.compile(rf"({_IDENT})((?:->{_SEGMENT})+)")
_FMT_RE = re.compile(rf"({'|'.join(FORMATS)})|({'|'.join(ARG_FORMATS)})=({_IDENT})")


@dataclass(frozen=True)
class FieldSpec:
    name: str                 # the path as shown in output: "skb->dev->name"
    base: str                 # "skb"
    segments: tuple           # ("dev", "name"): one per "->"
    fmt: str | None = None    # "hex", "flags", ...
    fmt_arg: str | None = None


@dataclass(frozen=True)
class Resolved:
    spec: FieldSpec
    base: int                 # BASE_*
    base_off: int             # offset in sk_buff used by the base (end, header offset, _nfct)
    derefs: tuple             # pointer offsets followed in turn
    off: int                  # offset of the value in the last struct
    size: int                 # bytes read (<= VALUE_SIZE)
    member: object            # typedb Member of the final segment
    struct: str               # struct the final segment is in
    truncated: bool = False   # an array longer than VALUE_SIZE: its first bytes only

    @property
    def name(self) -> str:
        return self.spec.name


def _show(text) -> str:
    return repr(str(text)[:60])


def parse(text) -> FieldSpec:
    """Syntax only. UsageError with one line on anything else."""
    if not isinstance(text, str):
        raise UsageError("a field must be a string like \"skb->len\"")
    spec = text.strip()
    if not spec or len(spec) > MAX_SPEC:
        raise UsageError(f"a field must be 1 to {MAX_SPEC} characters, like skb->len")
    path, sep, fmt = spec.partition(":")
    path = path.replace(" ", "")
    m = _PATH_RE.fullmatch(path)
    if not m:
        raise UsageError(f"bad field {_show(spec)}: write BASE->member(.member)(->member...), e.g. skb->dev->name; "
                         f"bases: {', '.join(BASES)}")
    base = m.group(1)
    if base not in BASES:
        raise UsageError(f"bad field {_show(spec)}: unknown base {base!r}; bases: {', '.join(BASES)}")
    fmt_name = fmt_arg = None
    if sep:
        f = _FMT_RE.fullmatch(fmt.strip())
        if not f:
            raise UsageError(f"bad format in field {_show(spec)}: use one of {', '.join(FORMATS)}, "
                             "flags=ENUM_OR_ENUMERATOR, enum=ENUM_OR_ENUMERATOR")
        fmt_name = f.group(1) or f.group(2)
        fmt_arg = f.group(3)
    segments = tuple(m.group(2).split("->")[1:])
    return FieldSpec(name=path, base=base, segments=segments, fmt=fmt_name, fmt_arg=fmt_arg)


def parse_all(texts) -> list[FieldSpec]:
    if texts is None:
        return []
    if not isinstance(texts, (list, tuple)):
        raise UsageError("fields must be a list of strings like [\"skb->len\"]")
    if len(texts) > MAX_FIELDS:
        raise UsageError(f"at most {MAX_FIELDS} fields can be traced at once, got {len(texts)}")
    out, seen = [], set()
    for text in texts:
        spec = parse(text)
        if spec.name in seen:
            raise UsageError(f"field {spec.name} is asked for twice")
        seen.add(spec.name)
        out.append(spec)
    return out


def _member(typedb, struct: str, path: str, field: str):
    try:
        return typedb.struct_member(struct, path)
    except KeyError as exc:
        msg = exc.args[0] if exc.args else str(exc)
        if len(msg) > 1500:
            msg = msg[:1500] + " ..."
        raise UsageError(f"field {field}: {msg}") from None


def _base(typedb, spec: FieldSpec):
    """(BASE_*, base_off, derefs, struct) where the member path starts."""
    struct, how, skb_member = BASES[spec.base]
    if how != "skb" and not typedb.has_struct(struct):
        hint = " (is the nf_conntrack module loaded?)" if spec.base == "ct" else ""
        raise UsageError(f"field {spec.name}: this kernel's type info has no struct {struct}{hint}")
    if how == "skb":
        return BASE_SKB, 0, [], struct
    try:
        m = typedb.struct_member("sk_buff", skb_member)
    except KeyError:
        raise UsageError(f"field {spec.name}: this kernel's sk_buff has no {skb_member}, "
                         f"so {spec.base}-> is not available") from None
    if how == "ptr":
        return BASE_SKB, 0, [m.offset], struct
    if how == "shinfo":
        if m.kind == "ptr":       # sk_buff_data_t is a pointer on 32-bit kernels
            return BASE_SKB, 0, [m.offset], struct
        return BASE_HEAD32, m.offset, [], struct
    if how == "header":
        return BASE_HEAD16, m.offset, [], struct
    return BASE_PTR_LOW3, m.offset, [], struct


def resolve(typedb, spec: FieldSpec) -> Resolved:
    """Walk the path through the type info. UsageError naming the valid members on a bad path."""
    base, base_off, derefs, struct = _base(typedb, spec)
    where = spec.base
    member = None
    for i, seg in enumerate(spec.segments):
        member = _member(typedb, struct, seg, spec.name)
        last = i == len(spec.segments) - 1
        if not last:
            if member.kind != "ptr" or not member.target_struct:
                raise UsageError(f"field {spec.name}: {where}->{seg} is {member.type_name}, not a pointer "
                                 "to a struct, so '->' cannot follow it")
            derefs.append(member.offset)
            struct = member.target_struct
            where = f"{where}->{seg}"
    if len(derefs) > MAX_DEREFS:
        raise UsageError(f"field {spec.name}: follows {len(derefs)} pointers; at most {MAX_DEREFS}")
    kind = member.kind
    size = member.size
    truncated = False
    if member.bit_size:
        size = (member.bit_offset + member.bit_size + 7) // 8
        if size > 8:
            raise UsageError(f"field {spec.name}: bitfield wider than 64 bits")
    elif kind in ("func", "void") or size <= 0:
        raise UsageError(f"field {spec.name}: {member.type_name} has no value to read")
    elif kind in ("struct", "union") and size > VALUE_SIZE:
        try:
            names = ", ".join(typedb.struct_members(member.type_name.split()[-1]))
        except (KeyError, IndexError):
            names = ""
        raise UsageError(f"field {spec.name}: {member.type_name} is {size} bytes (at most {VALUE_SIZE}); "
                         f"pick one of its members{': ' + names if names else ''}"[:1600])
    elif size > VALUE_SIZE:
        if kind != "array":
            raise UsageError(f"field {spec.name}: {member.type_name} is {size} bytes; at most {VALUE_SIZE}")
        size, truncated = VALUE_SIZE, True
    return Resolved(spec=spec, base=base, base_off=base_off, derefs=tuple(derefs), off=member.offset,
                    size=size, member=member, struct=struct, truncated=truncated)


def resolve_all(typedb, specs) -> list[Resolved]:
    """Specs (FieldSpec or text) resolved; the first bad one raises UsageError."""
    specs = [s if isinstance(s, FieldSpec) else parse(s) for s in specs or []]
    if len(specs) > MAX_FIELDS:
        raise UsageError(f"at most {MAX_FIELDS} fields can be traced at once, got {len(specs)}")
    return [resolve(typedb, s) for s in specs]
