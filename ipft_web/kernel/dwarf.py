"""The TypeDB from an ELF file's DWARF (pyelftools), for kernels without BTF (`--vmlinux PATH`).

Every type DIE becomes a record shaped like a BTF type (see typedb.TypeGraph), so the answers
match what the BTF reader gives for the same C code. Reading a whole vmlinux's DWARF with
pyelftools is slow (minutes); BTF is the normal path.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from ..errors import EnvError
from ..logs import get_logger
from .typedb import TypeGraph

log = get_logger(__name__)

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

    def __init__(self, db: DwarfTypes, dwarf=None):
        self.db = db
        self.dwarf = dwarf
        self.canon: dict[tuple, int] = {}   # identity of a named type -> its record
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
        self.walk(cu.get_top_DIE())

    def walk(self, die) -> None:
        """Visit the DIEs below `die` (C puts every type at the CU's top level); function bodies
        are skipped (pyelftools jumps over them with DW_AT_sibling)."""
        stack = list(die.iter_children())
        stack.reverse()
        while stack:
            d = stack.pop()
            tag = d.tag
            if tag in ("DW_TAG_namespace", "DW_TAG_module") and d.has_children:
                kids = list(d.iter_children())
                kids.reverse()
                stack.extend(kids)
            else:
                self.visit(d, tag)

    def _dedup(self, key, die) -> bool:
        """True if an identical named type was already read (this DIE now stands for it)."""
        tid = self.canon.get(key)
        if tid is None:
            return False
        self.db._by_offset[die.offset] = tid
        return True

    def visit(self, die, tag: str) -> None:
        db = self.db
        off = die.offset
        if tag in _QUALIFIER_TAGS:
            kind = _QUALIFIER_TAGS[tag]
            name = self.name(die) if kind == "typedef" else ""
            if kind == "typedef":
                key = ("typedef", name, self.const(die, "DW_AT_decl_line"))
                if self._dedup(key, die):
                    return
            tid = db._new(kind, name, self.ref(die) or 0, self.const(die, "DW_AT_byte_size", 0), off)
            self.fix_refs.append(tid)
            if kind == "typedef":
                self.canon[key] = tid
                db._index["typedef"].setdefault(name, []).append(tid)
        elif tag == "DW_TAG_base_type":
            enc = self.const(die, "DW_AT_encoding", 0)
            name, size = self.name(die), self.const(die, "DW_AT_byte_size", 0)
            key = ("base", name, size, enc)
            if not self._dedup(key, die):
                self.canon[key] = db._new("float" if enc in _DW_ATE_FLOATS else "int", name, 0, size, off)
        elif tag == "DW_TAG_unspecified_type":  # C++ nullptr_t, "void" in some producers
            db._new("int", self.name(die) or "void", 0, 0, off)
        elif tag in _AGGREGATES:
            self.aggregate(die, _AGGREGATES[tag])
        elif tag == "DW_TAG_enumeration_type":
            self.enumeration(die)
        elif tag == "DW_TAG_array_type":
            self.array(die)
        elif tag == "DW_TAG_subroutine_type":
            tid = db._new("func_proto", "", self.ref(die) or 0, 0, off)
            self.fix_refs.append(tid)
            db.extra[tid] = self.params(die)
            self.fix_params.append(tid)
        elif tag == "DW_TAG_subprogram":
            self.subprogram(die)

    def aggregate(self, die, kind: str) -> None:
        db = self.db
        name = self.name(die)
        if "DW_AT_declaration" in die.attributes:
            key = ("fwd", kind, name)
            if name and self._dedup(key, die):
                return
            tid = db._new("fwd", name, 0, 0, die.offset)
            if kind == "union":
                db.fwd_union.add(tid)
            if name:
                self.canon[key] = tid
                db._index["struct"].setdefault(name, []).append(tid)
            return
        size = self.const(die, "DW_AT_byte_size", 0)
        # Every CU that includes a header repeats its structs: read each named one once.
        key = (kind, name, size, self.const(die, "DW_AT_decl_line"))
        if name and self._dedup(key, die):
            return
        tid = db._new(kind, name, 0, size, die.offset)
        if name:
            self.canon[key] = tid
            db._index["struct"].setdefault(name, []).append(tid)
        members = []
        nested = False
        for child in die.iter_children():
            if child.tag == "DW_TAG_member":
                if "DW_AT_external" in child.attributes or "DW_AT_declaration" in child.attributes:
                    continue  # C++ static member
                members.append(self.member(child))
            else:
                nested = True
        db.extra[tid] = members
        self.fix_members.append(tid)
        if nested:  # types declared inside (C++; C puts them at the top)
            for child in die.iter_children():
                if child.tag != "DW_TAG_member":
                    self.visit(child, child.tag)

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
        size = self.const(die, "DW_AT_byte_size", 0)
        key = ("enum", name, size, self.const(die, "DW_AT_decl_line"), "DW_AT_declaration" in die.attributes)
        if name and self._dedup(key, die):
            return
        tid = db._new("enum", name, 0, size, die.offset)
        if name:
            self.canon[key] = tid
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
        """Formal parameters (they come first among a function's children)."""
        out = []
        for child in die.iter_children():
            tag = child.tag
            if tag == "DW_TAG_formal_parameter":
                out.append((self.name(child), self.ref(child) or 0))
            elif tag == "DW_TAG_unspecified_parameters":
                out.append(("", 0))
            elif tag not in ("DW_TAG_template_type_param", "DW_TAG_template_value_param"):
                break
        return out

    def subprogram(self, die) -> None:
        attrs = die.attributes
        has_addr = any(a in attrs for a in _ADDR_ATTRS)
        origin = self.ref(die, "DW_AT_abstract_origin") or self.ref(die, "DW_AT_specification")
        # A concrete instance lists its params in register order with abstract_origin links:
        # the origin's list (declaration order, names, types) is the one that counts.
        params = None if origin else self.params(die)
        self.db._pending_funcs.append((die.offset, origin, self.name(die), self.ref(die) or 0, params, has_addr))

    def resolve_missing(self) -> None:
        """Read the type DIEs that references point to but the top-level walk did not record."""
        db = self.db
        tried: set[int] = set()
        done = {"refs": 0, "members": 0, "params": 0, "arrays": 0, "funcs": 0}
        while True:
            want = set()
            for tid in self.fix_refs[done["refs"]:]:
                want.add(db.refs[tid])
            for tid in self.fix_members[done["members"]:]:
                want.update(t for _n, t, _b, _s in db.extra[tid])
            for tid in self.fix_params[done["params"]:]:
                want.update(t for _n, t in db.extra[tid])
            for tid in self.fix_arrays[done["arrays"]:]:
                want.add(db.extra[tid][0])
            for f in db._pending_funcs[done["funcs"]:]:
                want.add(f[3])
                want.update(t for _n, t in (f[4] or ()))
            done = {"refs": len(self.fix_refs), "members": len(self.fix_members), "params": len(self.fix_params),
                    "arrays": len(self.fix_arrays), "funcs": len(db._pending_funcs)}
            want = {o for o in want if o and o not in db._by_offset and o not in tried}
            if not want or self.dwarf is None:
                return
            for off in sorted(want):
                tried.add(off)
                try:
                    die = self.dwarf.get_DIE_from_refaddr(off)
                except Exception:  # noqa: BLE001 (a bad reference in odd DWARF: it stays void)
                    continue
                self.visit(die, die.tag)

    def finish(self) -> None:
        self.resolve_missing()
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


CACHE_DIRS = ("/var/cache/ipft-web", "~/.cache/ipft-web")
CACHE_FORMAT = 1
CACHE_MIN_SECONDS = 5.0  # only reads slower than this are worth a cache file


def load_dwarf(path: str | os.PathLike, *, cache: bool = True, cache_dirs=CACHE_DIRS,
               cache_min_seconds: float = CACHE_MIN_SECONDS) -> DwarfTypes:
    """TypeDB from the DWARF of an ELF file (vmlinux with CONFIG_DEBUG_INFO, or an object file).

    A whole vmlinux takes minutes with pyelftools, so a slow read is saved (JSON, keyed by the
    file's path, size and mtime) under /var/cache/ipft-web/dwarf or ~/.cache/ipft-web/dwarf."""
    origin = str(path)
    p = Path(path)
    if not p.is_file():
        raise EnvError(f"--vmlinux {origin}: no such file")
    cache_file = _cache_file(p, cache_dirs) if cache else None
    if cache_file is not None:
        db = _load_cache(cache_file, origin)
        if db is not None:
            log.info("type info of %s from cache %s", origin, cache_file)
            return db
    started = time.monotonic()
    db = _read(p, origin)
    if cache_file is not None and time.monotonic() - started >= cache_min_seconds:
        _save_cache(db, cache_file)
    return db


def _read(p: Path, origin: str) -> DwarfTypes:
    try:
        from elftools.elf.elffile import ELFFile
    except ImportError:
        raise EnvError("pyelftools is missing: pip install pyelftools") from None
    db = DwarfTypes(origin)
    no_debug = (f"{origin}: no DWARF debug info (need a vmlinux built with CONFIG_DEBUG_INFO, "
                "e.g. from the linux-image-*-dbg package)")
    try:
        with open(p, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise EnvError(f"{origin}: not an ELF file")
            f.seek(0)
            elf = ELFFile(f)
            if not elf.has_dwarf_info():
                raise EnvError(no_debug)
            dwarf = elf.get_dwarf_info()
            reader = _Reader(db, dwarf)
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
        raise EnvError(no_debug)
    log.info("read DWARF of %s: %d CUs, %d types, %d functions", origin, ncu, len(db), len(db._funcs))
    return db


# -- cache ---------------------------------------------------------------------------------------
def _cache_file(p: Path, cache_dirs) -> Path | None:
    try:
        st = p.stat()
        ident = f"{os.path.realpath(p)}\0{st.st_size}\0{st.st_mtime_ns}\0{CACHE_FORMAT}"
    except OSError:
        return None
    name = hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".json"
    for d in cache_dirs:
        root = Path(os.path.expanduser(d)) / "dwarf"
        probe = root
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if probe.is_dir() and os.access(probe, os.W_OK):
            return root / name
    return None


def _save_cache(db: DwarfTypes, target: Path) -> None:
    data = {"format": CACHE_FORMAT, "origin": db.origin, "ptr_size": db.ptr_size, "kinds": db.kinds,
            "names": db.names, "refs": db.refs, "sizes": db.sizes,
            "extra": [[tid, value] for tid, value in db.extra.items()],
            "fwd_union": sorted(db.fwd_union), "index": db._index,
            "funcs": {name: list(v) for name, v in db._funcs.items()}}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=target.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, target)
    except OSError as exc:
        log.warning("could not save the DWARF cache %s: %s", target, exc)


def _load_cache(path: Path, origin: str) -> DwarfTypes | None:
    """The cached type records, or None if absent or not usable (then DWARF is read again)."""
    try:
        data = json.loads(path.read_text())
        if data.get("format") != CACHE_FORMAT:
            return None
        db = DwarfTypes(origin)
        kinds, names, refs, sizes = data["kinds"], data["names"], data["refs"], data["sizes"]
        n = len(kinds)
        if not (len(names) == len(refs) == len(sizes) == n) or not all(isinstance(k, str) for k in kinds):
            return None
        db.kinds, db.names, db.refs, db.sizes = kinds, names, refs, sizes
        db.ptr_size = int(data["ptr_size"])
        for tid, value in data["extra"]:
            kind = kinds[tid]
            if kind in ("struct", "union"):
                db.extra[tid] = [tuple(m) for m in value]
            elif kind in ("func_proto", "enum"):
                db.extra[tid] = [tuple(v) for v in value]
            elif kind == "array":
                db.extra[tid] = tuple(value)
        db.fwd_union = set(data["fwd_union"])
        groups = ("struct", "enum", "typedef", "func")
        db._index = {g: {k: list(v) for k, v in data["index"][g].items()} for g in groups}
        db._funcs = {name: (int(v[0]), int(v[1])) for name, v in data["funcs"].items()}
        if any(not 0 <= r < n for r in refs) or any(not 0 <= fid < n for _r, fid in db._funcs.values()):
            return None
        return db
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
