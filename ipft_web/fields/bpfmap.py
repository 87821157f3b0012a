"""Resolved fields into the compiled program's maps (ipft_fields, ipft_nfields in bpf/ipft.bpf.c).

The program never changes: a session's fields are integers in these maps, written before the
probes are attached. The count is written last, so the program never sees a half-written set.
"""
from __future__ import annotations

import ctypes
import struct

from .paths import MAX_DEREFS, MAX_FIELDS, VALUE_SIZE, Resolved

S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1


class FieldEntry(ctypes.Structure):
    """struct ipft_field in bpf/ipft.bpf.c."""
    _fields_ = [
        ("base", ctypes.c_uint8),
        ("nderef", ctypes.c_uint8),
        ("size", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("base_off", ctypes.c_int32),
        ("deref", ctypes.c_int32 * MAX_DEREFS),
        ("off", ctypes.c_int32),
    ]


def _s32(v: int) -> int:
    if not S32_MIN <= v <= S32_MAX:
        raise ValueError(f"offset {v} does not fit 32 bits")
    return v


def _key(i: int) -> bytes:
    return struct.pack("<I", i)


def _count(n: int) -> bytes:
    return struct.pack("<I", n)


def load(obj, fields: list[Resolved]) -> None:
    """`obj`: the loaded program (bpfobject.BPFObject)."""
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"at most {MAX_FIELDS} fields")
    count = obj.map("ipft_nfields")
    count.update(_key(0), _count(0))
    table = obj.map("ipft_fields")
    if table.spec.value_size != ctypes.sizeof(FieldEntry):
        raise ValueError(f"ipft_fields holds {table.spec.value_size}-byte values, "
                         f"not struct ipft_field's {ctypes.sizeof(FieldEntry)}")
    for i, f in enumerate(fields):
        if len(f.derefs) > MAX_DEREFS or not 0 <= f.size <= VALUE_SIZE:
            raise ValueError(f"field {f.name} does not fit the program's limits")
        leaf = FieldEntry(base=f.base, nderef=len(f.derefs), size=f.size, base_off=_s32(f.base_off),
                          off=_s32(f.off))
        for k, off in enumerate(f.derefs):
            leaf.deref[k] = _s32(off)
        table.update(_key(i), bytes(leaf))
    count.update(_key(0), _count(len(fields)))


def clear(obj) -> None:
    obj.map("ipft_nfields").update(_key(0), _count(0))
