"""The TypeDB from an ELF file's DWARF (pyelftools), for kernels without BTF (`--vmlinux PATH`).

Every type DIE becomes a record shaped like a BTF type (see typedb.TypeGraph), so the answers
match what the BTF reader gives for the same C code. Reading a whole vmlinux's DWARF with
pyelftools is slow (minutes); BTF is the normal path.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import EnvError
from .typedb import TypeGraph

log = logging.getLogger(__name__)

_QUALIFIER_TAGS = {
    "DW_TAG_typedef": "typedef",
    "DW_TAG_const_type": "const",
    "DW_TAG_volatile_type": "volatile",
    "DW_TAG_restrict_type": "restrict",
    "DW_TAG_atomic_type": "type_tag",       # spelled like the type it wraps
    "DW_TAG_immutable_type": "const",
    "DW_TAG_pointer_type": "ptr",
    "DW_TAG_reference_type": "ptr",
    "DW_TAG_rvalue_reference_type": "ptr",
}
_AGGREGATES = {"DW_TAG_structure_type": "struct", "DW_TAG_class_type": "struct", "DW_TAG_union_type": "union"}
_REF_FORMS = {"DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8", "DW_FORM_ref_udata"}
_ADDR_ATTRS = ("DW_AT_low_pc", "DW_AT_ranges", "DW_AT_entry_pc")
_DW_ATE_FLOATS = {0x4, 0x3, 0x9}  # float, complex float, decimal float
_DW_ATE_SIGNED = {0x5, 0x6, 0xD}  # signed, signed char, signed fixed


class DwarfTypes(TypeGraph):
    """Type records built from DWARF DIEs (ids are ours; 0 is void)."""

    def __init__(self, origin: str = "DWARF"):
        self.origin = origin
        self.module = None
        self.kinds: list[str] = ["void"]
        self.names: list[str] = [""]
        self.refs: list[int] = [0]     # DIE offsets while reading, type ids after _link()
        self.sizes: list[int] = [0]
        self.extra: dict[int, object] = {}
        self.fwd_union: set[int] = set()
        self.ptr_size = 8
        self._by_offset: dict[int, int] = {}
        self._index: dict[str, dict[str, list[int]]] = {"struct": {}, "enum": {}, "typedef": {}, "func": {}}
        self._funcs: dict[str, tuple[int, int]] = {}   # name -> (rank, func id)
        self._pending_funcs: list = []

    # -- building ------------------------------------------------------------------------------
    def _new(self, kind: str, name: str = "", ref: int = 0, size: int = 0, offset: int | None = None) -> int:
        tid = len(self.kinds)
        self.kinds.append(kind)
        self.names.append(name)
        self.refs.append(ref)
        self.sizes.append(size)
        if offset is not None:
            self._by_offset[offset] = tid
        return tid

    def _link(self, ref_offset: int | None) -> int:
        return self._by_offset.get(ref_offset, 0) if ref_offset else 0

    # -- TypeGraph record accessors ---------------------------------------------------------------
    def _kind(self, tid: int) -> str:
        return self.kinds[tid]

    def _name(self, tid: int) -> str:
        return self.names[tid]

    def _ref(self, tid: int) -> int:
        return self.refs[tid]

    def _size(self, tid: int) -> int:
        return self.sizes[tid]

    def _members(self, tid: int) -> list:
        return self.extra.get(tid, []) if self.kinds[tid] in ("struct", "union") else []

    def _params(self, tid: int) -> list:
        return self.extra.get(tid, []) if self.kinds[tid] == "func_proto" else []

    def _enum_values(self, tid: int) -> list:
        return self.extra.get(tid, []) if self.kinds[tid] == "enum" else []

    def _array(self, tid: int) -> tuple[int, int]:
        return self.extra.get(tid, (0, 0)) if self.kinds[tid] == "array" else (0, 0)

    def _fwd_union(self, tid: int) -> bool:
        return tid in self.fwd_union

    def _pointer_size(self) -> int:
        return self.ptr_size

    def _lookup(self, group: str, name: str) -> list[int]:
        return self._index[group].get(name, [])

    def _names(self, group: str):
        return self._index[group].keys()

    def _func_ids(self):
        for _rank, fid in self._funcs.values():
            yield fid

    def __len__(self) -> int:
        return len(self.kinds)


class _Reader:
    """One pass over every CU's DIE tree."""

    def __init__(self, db: DwarfTypes):
        self.db = db
        self.fix_refs: list[int] = []       # type ids whose refs[] still hold DIE offsets
        self.fix_members: list[int] = []
        self.fix_params: list[int] = []
        self.fix_arrays: list[int] = []
        self.origins: dict[int, tuple] = {}  # DIE offset of a subprogram -> (name, params info)

    def ref(self, die, attr: str = "DW_AT_type") -> int | None:
        a = die.attributes.get(attr)
        if a is None:
            return None
        if a.form in _REF_FORMS:
            return die.cu.cu_offset + a.value
        if a.form in ("DW_FORM_ref_addr", "DW_FORM_GNU_ref_alt"):
            return a.value
        return None  # DW_FORM_ref_sig8 (type units) and others: unsupported -> void

    @staticmethod
    def name(die) -> str:
        a = die.attributes.get("DW_AT_name")
        if a is None:
            return ""
        v = a.value
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    @staticmethod
    def const(die, attr: str, default=None):
        a = die.attributes.get(attr)
        if a is None or not isinstance(a.value, int):
            return default
        return a.value

    def read_cu(self, cu) -> None:
        self.db.ptr_size = cu["address_size"] or 8
        top = cu.get_top_DIE()
        self.walk(top)

    def walk(self, die) -> None:
        stack = [die]
        while stack:
            d = stack.pop()
            tag = d.tag
            handled = self.visit(d, tag)
            if not handled and d.has_children:
                stack.extend(reversed(list(d.iter_children())))

    def visit(self, die, tag: str) -> bool:
        """Record `die`; True if its children were consumed here."""
        db = self.db
        off = die.offset
        if tag in _QUALIFIER_TAGS:
            kind = _QUALIFIER_TAGS[tag]
            tid = db._new(kind, self.name(die) if kind == "typedef" else "", self.ref(die) or 0,
                          self.const(die, "DW_AT_byte_size", 0), off)
            self.fix_refs.append(tid)
            if kind == "typedef":
                db._index["typedef"].setdefault(db.names[tid], []).append(tid)
            return False
        if tag == "DW_TAG_base_type":
            enc = self.const(die, "DW_AT_encoding", 0)
            db._new("float" if enc in _DW_ATE_FLOATS else "int", self.name(die), 0,
                    self.const(die, "DW_AT_byte_size", 0), off)
            return False
        if tag == "DW_TAG_unspecified_type":  # C++ nullptr_t, "void" in some producers
            db._new("int", self.name(die) or "void", 0, 0, off)
            return False
        if tag in _AGGREGATES:
            self.aggregate(die, _AGGREGATES[tag])
            return True
        if tag == "DW_TAG_enumeration_type":
            self.enumeration(die)
            return True
        if tag == "DW_TAG_array_type":
            self.array(die)
            return True
        if tag == "DW_TAG_subroutine_type":
            tid = db._new("func_proto", "", self.ref(die) or 0, 0, off)
            self.fix_refs.append(tid)
            db.extra[tid] = self.params(die)
            self.fix_params.append(tid)
            return True
        if tag == "DW_TAG_subprogram":
            self.subprogram(die)
            return False  # local types inside the body
        return False

    def aggregate(self, die, kind: str) -> None:
        db = self.db
        name = self.name(die)
        if "DW_AT_declaration" in die.attributes:
            tid = db._new("fwd", name, 0, 0, die.offset)
            if kind == "union":
                db.fwd_union.add(tid)
            if name:
                db._index["struct"].setdefault(name, []).append(tid)
            return
        tid = db._new(kind, name, 0, self.const(die, "DW_AT_byte_size", 0), die.offset)
        if name:
            db._index["struct"].setdefault(name, []).append(tid)
        members = []
        nested = []
        for child in die.iter_children():
            if child.tag == "DW_TAG_member":
                if "DW_AT_external" in child.attributes or "DW_AT_declaration" in child.attributes:
                    continue  # C++ static member
                members.append(self.member(child))
            else:
                nested.append(child)
        db.extra[tid] = members
        self.fix_members.append(tid)
        for child in nested:
            self.walk(child)

    def member(self, die) -> tuple:
        loc = die.attributes.get("DW_AT_data_member_location")
        byte_off = 0
        if loc is not None:
            if isinstance(loc.value, int):
                byte_off = loc.value
            elif isinstance(loc.value, (list, bytes)) and len(loc.value) >= 2 and loc.value[0] == 0x23:
                byte_off = _uleb(loc.value[1:])  # DW_OP_plus_uconst n (DWARF 2)
        bit_size = self.const(die, "DW_AT_bit_size", 0)
        data_bit = self.const(die, "DW_AT_data_bit_offset")
        if data_bit is not None:
            bits = data_bit
        elif bit_size and self.const(die, "DW_AT_bit_offset") is not None:
            # DWARF 2/3: bit_offset counts from the storage unit's most significant bit (little endian).
            storage = self.const(die, "DW_AT_byte_size", 0)
            bits = byte_off * 8 + storage * 8 - self.const(die, "DW_AT_bit_offset") - bit_size
        else:
            bits = byte_off * 8
        return (self.name(die), self.ref(die) or 0, bits, bit_size)

    def enumeration(self, die) -> None:
        db = self.db
        name = self.name(die)
        tid = db._new("enum", name, 0, self.const(die, "DW_AT_byte_size", 0), die.offset)
        if name:
            db._index["enum"].setdefault(name, []).append(tid)
        signed = False
        under = self.ref(die)
        if under is not None:
            try:
                base = die.get_DIE_from_attribute("DW_AT_type")
                signed = self.const(base, "DW_AT_encoding", 0) in _DW_ATE_SIGNED
            except Exception:  # noqa: BLE001 (pyelftools raises many kinds on odd refs)
                signed = False
        values = []
        for child in die.iter_children():
            if child.tag != "DW_TAG_enumerator":
                continue
            a = child.attributes.get("DW_AT_const_value")
            if a is None or not isinstance(a.value, int):
                continue
            v = a.value
            width = {"DW_FORM_data1": 8, "DW_FORM_data2": 16, "DW_FORM_data4": 32, "DW_FORM_data8": 64}.get(a.form)
            if signed and width and v >= 1 << (width - 1):
                v -= 1 << width
            values.append((self.name(child), v))
        db.extra[tid] = values

    def array(self, die) -> None:
        db = self.db
        dims = []
        for child in die.iter_children():
            if child.tag in ("DW_TAG_subrange_type", "DW_TAG_enumeration_type"):
                count = self.const(child, "DW_AT_count")
                if count is None:
                    upper = self.const(child, "DW_AT_upper_bound")
                    lower = self.const(child, "DW_AT_lower_bound", 0)
                    count = upper - lower + 1 if upper is not None and upper < (1 << 63) else 0
                dims.append(max(count, 0))
        if not dims:
            dims = [0]
        # int a[2][3] is an array of 2 arrays of 3: the outermost record carries the DIE offset.
        elem_off = self.ref(die) or 0
        inner = None
        for n in reversed(dims[1:]):
            t = db._new("array")
            db.extra[t] = (inner if inner is not None else elem_off, n)
            if inner is None:
                self.fix_arrays.append(t)
            inner = t
        tid = db._new("array", "", 0, 0, die.offset)
        db.extra[tid] = (inner if inner is not None else elem_off, dims[0])
        if inner is None:
            self.fix_arrays.append(tid)

    def params(self, die) -> list:
        out = []
        for child in die.iter_children():
            if child.tag == "DW_TAG_formal_parameter":
                out.append((self.name(child), self.ref(child) or 0))
            elif child.tag == "DW_TAG_unspecified_parameters":
                out.append(("", 0))
        return out

    def subprogram(self, die) -> None:
        attrs = die.attributes
        has_addr = any(a in attrs for a in _ADDR_ATTRS)
        origin = self.ref(die, "DW_AT_abstract_origin") or self.ref(die, "DW_AT_specification")
        # A concrete instance lists its params in register order with abstract_origin links:
        # the origin's list (declaration order, names, types) is the one that counts.
        params = None if origin else self.params(die)
        self.db._pending_funcs.append((die.offset, origin, self.name(die), self.ref(die) or 0, params, has_addr))

    def finish(self) -> None:
        db = self.db
        link = db._link
        for tid in self.fix_refs:
            db.refs[tid] = link(db.refs[tid])
        for tid in self.fix_members:
            db.extra[tid] = [(n, link(t), b, s) for n, t, b, s in db.extra[tid]]
        for tid in self.fix_params:
            db.extra[tid] = [(n, link(t) if t else 0) for n, t in db.extra[tid]]
        for tid in self.fix_arrays:
            elem, n = db.extra[tid]
            db.extra[tid] = (link(elem), n)
        # Functions: a concrete instance (abstract_origin) or a definition (specification) takes
        # the name and params of the DIE it points to when it has none of its own.
        by_off = {p[0]: p for p in db._pending_funcs}
        for off, origin, name, ret, params, has_addr in db._pending_funcs:
            seen = set()
            while origin and origin in by_off and origin not in seen:
                seen.add(origin)
                o = by_off[origin]
                name = name or o[2]
                ret = ret or o[3]
                if params is None:
                    params = o[4]
                origin = o[1]
            if not name or not (has_addr or params):
                continue
            params = params or []
            rank = (2 if has_addr else 0) + (1 if any(n for n, _t in params) else 0)
            best = db._funcs.get(name)
            if best is not None and best[0] >= rank:
                continue
            proto = db._new("func_proto", "", link(ret) if ret else 0)
            db.extra[proto] = [(n, link(t) if t else 0) for n, t in params]
            fid = db._new("func", name, proto)
            if best is None:
                db._index["func"].setdefault(name, []).append(fid)
            else:
                db._index["func"][name] = [fid]
            db._funcs[name] = (rank, fid)
        db._pending_funcs = []
        db._by_offset = {}


def _uleb(data) -> int:
    result = shift = 0
    for b in data:
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return result


def load_dwarf(path: str | os.PathLike) -> DwarfTypes:
    """TypeDB from the DWARF of an ELF file (vmlinux with CONFIG_DEBUG_INFO, or an object file)."""
    origin = str(path)
    p = Path(path)
    if not p.is_file():
        raise EnvError(f"--vmlinux {origin}: no such file")
    try:
        from elftools.elf.elffile import ELFFile
    except ImportError:
        raise EnvError("pyelftools is missing: pip install pyelftools") from None
    db = DwarfTypes(origin)
    try:
        with open(p, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise EnvError(f"{origin}: not an ELF file")
            f.seek(0)
            elf = ELFFile(f)
            if not elf.has_dwarf_info():
                raise EnvError(f"{origin}: no DWARF debug info (need a vmlinux built with CONFIG_DEBUG_INFO, "
                               "e.g. from the linux-image-*-dbg package)")
            dwarf = elf.get_dwarf_info()
            reader = _Reader(db)
            ncu = 0
            for cu in dwarf.iter_CUs():
                reader.read_cu(cu)
                ncu += 1
            reader.finish()
    except EnvError:
        raise
    except OSError as exc:
        raise EnvError(f"cannot read {origin}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 (hostile/odd files: pyelftools raises anything)
        raise EnvError(f"{origin}: unreadable DWARF ({type(exc).__name__}: {exc})") from None
    if ncu == 0:
        raise EnvError(f"{origin}: DWARF has no compile units")
    log.info("read DWARF of %s: %d CUs, %d types, %d functions", origin, ncu, len(db), len(db._funcs))
    return db
