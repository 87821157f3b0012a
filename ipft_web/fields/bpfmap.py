"""Resolved fields into the compiled program's maps (ipft_fields, ipft_nfields in bpf/ipft.bpf.c).

The program never changes: a session's fields are integers in these maps, written before the
probes are attached. The count is written last, so the program never sees a half-written set.
"""
from __future__ import annotations

from .paths import MAX_DEREFS, MAX_FIELDS, VALUE_SIZE, Resolved

S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1


def _s32(v: int) -> int:
    if not S32_MIN <= v <= S32_MAX:
        raise ValueError(f"offset {v} does not fit 32 bits")
    return v


def load(bpf, fields: list[Resolved]) -> None:
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"at most {MAX_FIELDS} fields")
    count = bpf["ipft_nfields"]
    count[count.Key(0)] = count.Leaf(0)
    table = bpf["ipft_fields"]
    for i, f in enumerate(fields):
        if len(f.derefs) > MAX_DEREFS or not 0 <= f.size <= VALUE_SIZE:
            raise ValueError(f"field {f.name} does not fit the program's limits")
        leaf = table.Leaf()
        leaf.base = f.base
        leaf.nderef = len(f.derefs)
        leaf.size = f.size
        leaf.base_off = _s32(f.base_off)
        for k, off in enumerate(f.derefs):
            leaf.deref[k] = _s32(off)
        leaf.off = _s32(f.off)
        table[table.Key(i)] = leaf
    count[count.Key(0)] = count.Leaf(len(fields))


def clear(bpf) -> None:
    count = bpf["ipft_nfields"]
    count[count.Key(0)] = count.Leaf(0)
