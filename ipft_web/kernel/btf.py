"""A pure-Python BTF reader: /sys/kernel/btf/vmlinux and module split BTF.

One pass over the type section records where each type starts (the whole vmlinux BTF is
read as an array of 32-bit words); members, params and enumerators are decoded only when
asked for. Split BTF (modules) continues the base's type ids and string offsets.
"""
from __future__ import annotations

import bisect
import os
import struct
import sys
from array import array
from itertools import compress, count

from ..errors import EnvError
from ..logs import get_logger
from ..records import field, record
from .typedb import MAX_CHAIN, MultiTypeDB, TypeGraph

log = get_logger(__name__)

BTF_MAGIC = 0xEB9F
SYS_BTF = "/sys/kernel/btf"

KIND_NAMES = ("unkn", "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef", "volatile",
              "const", "restrict", "func", "func_proto", "var", "datasec", "float", "decl_tag",
              "type_tag", "enum64")
K_INT, K_PTR, K_ARRAY, K_STRUCT, K_UNION, K_ENUM, K_FWD, K_TYPEDEF, K_VOLATILE, K_CONST, \
    K_RESTRICT, K_FUNC, K_FUNC_PROTO, K_VAR, K_DATASEC, K_FLOAT, K_DECL_TAG, K_TYPE_TAG, K_ENUM64 = range(1, 20)
# Words after the 3-word header: fixed part, and per vlen item.
_FIXED = (0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0)
_PER_ITEM = (0, 0, 0, 0, 3, 3, 2, 0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 3)
# By the top byte of a type's info word (kind_flag, 2 unused bits, the kind): the words a
# record takes before its items (None: not a kind), per item, and the kind itself.
_STEP = tuple(3 + _FIXED[t & 0x1F] if 0 < t & 0x1F <= 19 else None for t in range(256))
_PER_TOP = tuple(_PER_ITEM[t & 0x1F] if 0 < t & 0x1F <= 19 else 0 for t in range(256))
_KIND_OF_TOP = bytes(t & 0x1F for t in range(256))
_GROUPS = {"struct": (K_STRUCT, K_UNION, K_FWD), "enum": (K_ENUM, K_ENUM64), "typedef": (K_TYPEDEF,),
           "func": (K_FUNC,)}
_SKIP = frozenset((K_TYPEDEF, K_VOLATILE, K_CONST, K_RESTRICT, K_TYPE_TAG))
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4


class BtfError(EnvError):
    """Malformed or unreadable BTF."""


@record
class BtfType:
    """One decoded type record (for inspection and tests; the TypeDB questions don't need it)."""

    id: int
    kind: str                 # "INT", "STRUCT", ... (bpftool's spelling)
    name: str
    kind_flag: int
    vlen: int
    size: int = 0             # INT STRUCT UNION ENUM ENUM64 DATASEC FLOAT
    type: int = 0             # PTR TYPEDEF qualifiers FUNC FUNC_PROTO(return) VAR DECL_TAG TYPE_TAG
    int_encoding: int = 0
    int_offset: int = 0
    int_bits: int = 0
    array: tuple = ()         # (elem type, index type, nelems)
    members: list = field(default_factory=list)   # (name, type, bit_offset, bitfield_size)
    values: list = field(default_factory=list)    # (name, value)
    params: list = field(default_factory=list)    # (name, type)
    linkage: int = 0          # FUNC (vlen) and VAR
    component_idx: int = 0    # DECL_TAG
    secinfo: list = field(default_factory=list)   # DATASEC (type, offset, size)


class Btf(TypeGraph):
    """One BTF blob, optionally split on top of `base` (module BTF)."""

    def __init__(self, data: bytes, base: "Btf | None" = None, module: str | None = None, origin: str = "BTF"):
        self.origin = origin
        self.module = module
        self.base = base
        try:
            self._parse(data)
        except (struct.error, IndexError, ValueError, OverflowError) as exc:
            raise BtfError(f"{origin}: malformed BTF ({exc})") from None

    # -- parsing -------------------------------------------------------------------------------
    def _parse(self, data: bytes) -> None:
        origin = self.origin
        if len(data) < 24:
            raise BtfError(f"{origin}: not BTF (too short)")
        magic = struct.unpack_from("<H", data)[0]
        if magic == BTF_MAGIC:
            endian = "<"
        elif magic == 0x9FEB:
            endian = ">"
        else:
            raise BtfError(f"{origin}: not BTF (bad magic 0x{magic:04x})")
        fields = struct.unpack_from(endian + "HBBIIIII", data)
        _m, version, _flags, hdr_len, type_off, type_len, str_off, str_len = fields
        if version != 1:
            raise BtfError(f"{origin}: unsupported BTF version {version}")
        if hdr_len < 24 or type_len % 4 or type_off % 4:
            raise BtfError(f"{origin}: malformed BTF header")
        t0, s0 = hdr_len + type_off, hdr_len + str_off
        if t0 + type_len > len(data) or s0 + str_len > len(data):
            raise BtfError(f"{origin}: truncated BTF ({len(data)} bytes, header wants more)")
        words = array("I")
        if words.itemsize != 4:  # pragma: no cover (every platform we run on)
            raise BtfError("array('I') is not 32-bit here")
        words.frombytes(data[t0:t0 + type_len])
        if (endian == "<") != (sys.byteorder == "little"):
            words.byteswap()
        self.words = words
        self.strings = bytes(data[s0:s0 + str_len])
        if str_len and self.strings[-1:] != b"\0":
            raise BtfError(f"{origin}: malformed BTF (string section must end with NUL)")
        if self.base is None:
            if str_len and self.strings[:1] != b"\0":
                raise BtfError(f"{origin}: malformed BTF (string section must start with NUL)")
            self.start_id = 1
            self.str_base = 0
        else:
            self.start_id = self.base.next_id
            self.str_base = self.base.str_base + len(self.base.strings)
        # One pass: where each type starts and its kind.
        # (The loop is most of a first start's BTF time: each record costs as few operations as
        # can be. Tables are indexed by the info word's top byte, kind_flag included; an unknown
        # kind's step is None, which stops the loop with a TypeError.)
        offs = array("I")
        tops = bytearray()
        add_off, add_top = offs.append, tops.append
        step, per = _STEP, _PER_TOP
        i, n = 0, len(words)
        try:
            while i < n:
                info = words[i + 1]
                top = info >> 24
                add_off(i)
                add_top(top)
                i += step[top] + per[top] * (info & 0xFFFF)
        except TypeError:
            raise BtfError(f"{origin}: unknown BTF kind {tops[-1] & 0x1F} at type "
                           f"{self.start_id + len(offs) - 1}") from None
        if i != n:
            raise BtfError(f"{origin}: truncated BTF type section")
        self.offs = offs
        self.kinds = bytes(tops.translate(_KIND_OF_TOP))
        self.next_id = self.start_id + len(offs)
        self._index: dict[str, dict[str, list[int]]] = {}

    # -- low level -----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of types, counting void (id 0) for a base BTF (bpftool's last id + 1)."""
        return self.next_id

    def _str(self, off: int) -> str:
        if off < self.str_base:
            return self.base._str(off)
        off -= self.str_base
        s = self.strings
        end = s.find(b"\0", off)
        if end < 0 or off >= len(s):
            raise BtfError(f"{self.origin}: string offset {off + self.str_base} out of range")
        return s[off:end].decode("utf-8", "replace")

    def _kcode(self, tid: int) -> int:
        if tid >= self.start_id:
            try:
                return self.kinds[tid - self.start_id]
            except IndexError:
                raise BtfError(f"{self.origin}: type id {tid} out of range") from None
        if self.base is not None:
            return self.base._kcode(tid)
        return 0  # void

    def _at(self, tid: int) -> tuple["Btf", int]:
        """(owning Btf, word index of the type's header)."""
        btf = self
        while tid < btf.start_id:
            btf = btf.base
            if btf is None:
                raise BtfError(f"{self.origin}: type id {tid} has no record")
        try:
            return btf, btf.offs[tid - btf.start_id]
        except IndexError:
            raise BtfError(f"{self.origin}: type id {tid} out of range") from None

    # -- TypeGraph record accessors ---------------------------------------------------------------
    def _kind(self, tid: int) -> str:
        code = self._kcode(tid)
        if code == K_ENUM64:
            return "enum"
        return KIND_NAMES[code] if code else "void"

    def _name(self, tid: int) -> str:
        if tid == 0:
            return ""
        btf, i = self._at(tid)
        return btf._str(btf.words[i])

    def _ref(self, tid: int) -> int:
        btf, i = self._at(tid)
        return btf.words[i + 2]

    def _size(self, tid: int) -> int:
        if tid == 0:
            return 0
        btf, i = self._at(tid)
        return btf.words[i + 2]

    def _members(self, tid: int) -> list:
        btf, i = self._at(tid)
        w = btf.words
        info = w[i + 1]
        if (info >> 24) & 0x1F not in (K_STRUCT, K_UNION):
            return []
        bitfields = info >> 31
        out = []
        j = i + 3
        for _ in range(info & 0xFFFF):
            off = w[j + 2]
            if bitfields:
                out.append((btf._str(w[j]), w[j + 1], off & 0xFFFFFF, off >> 24))
            else:
                out.append((btf._str(w[j]), w[j + 1], off, 0))
            j += 3
        return out

    def _params(self, tid: int) -> list:
        btf, i = self._at(tid)
        w = btf.words
        j = i + 3
        return [(btf._str(w[j + 2 * k]), w[j + 2 * k + 1]) for k in range(w[i + 1] & 0xFFFF)]

    def _enum_values(self, tid: int) -> list:
        btf, i = self._at(tid)
        w = btf.words
        info = w[i + 1]
        kind, vlen, signed = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        out = []
        j = i + 3
        if kind == K_ENUM:
            for _ in range(vlen):
                v = w[j + 1]
                if signed and v & 0x80000000:
                    v -= 1 << 32
                out.append((btf._str(w[j]), v))
                j += 2
        elif kind == K_ENUM64:
            for _ in range(vlen):
                v = w[j + 1] | (w[j + 2] << 32)
                if signed and v & (1 << 63):
                    v -= 1 << 64
                out.append((btf._str(w[j]), v))
                j += 3
        return out

    def _array(self, tid: int) -> tuple[int, int]:
        btf, i = self._at(tid)
        return btf.words[i + 3], btf.words[i + 5]

    def _fwd_union(self, tid: int) -> bool:
        btf, i = self._at(tid)
        return bool(btf.words[i + 1] >> 31)

    def _group(self, group: str) -> dict[str, list[int]]:
        index = self._index.get(group)
        if index is None:
            index = {}
            w, offs, s, start = self.words, self.offs, self.strings, self.start_id
            own = self.str_base
            for code in _GROUPS[group]:
                kinds = self.kinds
                pos = kinds.find(code)
                while pos >= 0:
                    name_off = w[offs[pos]]
                    if name_off:
                        off = name_off - own
                        if 0 <= off < len(s):
                            name = s[off:s.find(b"\0", off)].decode("utf-8", "replace")
                        else:
                            name = self._str(name_off)
                        index.setdefault(name, []).append(start + pos)
                    pos = kinds.find(code, pos + 1)
            for ids in index.values():
                ids.sort()
            self._index[group] = index
        return index

    def _lookup(self, group: str, name: str) -> list[int]:
        ids = self._group(group).get(name, [])
        if self.base is not None:
            ids = ids + self.base._lookup(group, name)
        return ids

    def func_ids(self, name: str) -> list[int]:
        """Type ids of the FUNC records named `name` (its own and its base's), lowest first."""
        return self._lookup("func", name)

    def _names(self, group: str):
        return self._group(group).keys()

    def _func_ids(self):
        kinds = self.kinds
        pos = kinds.find(K_FUNC)
        while pos >= 0:
            yield self.start_id + pos
            pos = kinds.find(K_FUNC, pos + 1)

    # -- fast path for the catalog -------------------------------------------------------------
    def _proto_words(self, tid: int):
        """(words, index of the record) of FUNC_PROTO `tid` (own or base), or None for another kind."""
        if self._kcode(tid) != K_FUNC_PROTO:
            return None
        btf, i = self._at(tid)
        return btf.words, i

    def _kind_rows(self, codes) -> tuple[list[int], list[int]]:
        """(own type ids of these kind codes, the word index of each record), in id order: one
        pass over the kinds at C speed."""
        table = bytearray(256)
        for code in codes:
            table[code] = 1
        mask = self.kinds.translate(table)
        return list(compress(count(self.start_id), mask)), list(compress(self.offs, mask))

    def _words_at(self, rows: list[int], word: int) -> list[int]:
        """Word `word` (0: name, 2: type or size) of each of these records."""
        return list(map(self.words.__getitem__, map(word.__add__, rows) if word else rows))

    def _closure(self, seeds: set[int], ids: list[int], refs: list[int]) -> set[int]:
        """`seeds` and every id whose ref is in the result (ids[i] refers to refs[i]), followed at
        most MAX_CHAIN deep."""
        found = set(seeds)
        for _ in range(MAX_CHAIN):
            more = set(compress(ids, map(found.__contains__, refs))) - found
            if not more:
                break
            found |= more
        return found

    def _name_offsets(self, name: str) -> frozenset:
        """The string offsets (own and base) at which `name` is spelled."""
        found = set(self.base._name_offsets(name)) if self.base is not None else set()
        s, want = self.strings, b"\0" + name.encode() + b"\0"
        p = s.find(want)
        while p >= 0:
            found.add(self.str_base + p + 1)
            p = s.find(want, p + 1)
        return frozenset(found)

    def _struct_ptr_index(self, struct_name: str) -> tuple[frozenset, frozenset, dict]:
        """(ids that are struct/union/fwd `struct_name` behind qualifiers and typedefs, ids that are
        pointers to it likewise, {FUNC_PROTO id: 0-based index of its first such param}): this
        BTF's and its base's, made once per BTF. Found with whole-column passes rather than a walk
        of every function: the pointer ids are looked for in the type section (bytes.find) and each
        place they stand is checked to be a prototype's param."""
        memo = self.__dict__.setdefault("_struct_ptr_memo", {})
        found = memo.get(struct_name)
        if found is not None:
            return found
        base_t, base_s, base_protos = (self.base._struct_ptr_index(struct_name) if self.base is not None
                                       else (frozenset(), frozenset(), {}))
        try:
            quals, qrows = self._kind_rows(tuple(_SKIP))
            qrefs = self._words_at(qrows, 2)
            named, nrows = self._kind_rows((K_STRUCT, K_UNION, K_FWD))
            offsets = self._name_offsets(struct_name)
            named = compress(named, map(offsets.__contains__, self._words_at(nrows, 0)))
            structs = self._closure(set(base_t) | set(named), quals, qrefs)
            ptrs, prows = self._kind_rows((K_PTR,))
            pointers = set(compress(ptrs, map(structs.__contains__, self._words_at(prows, 2))))
            pointers = self._closure(pointers | set(base_s), quals, qrefs)
            protos = dict(base_protos)
            w, offs, kinds, start = self.words, self.offs, self.kinds, self.start_id
            data = w.tobytes()   # (bytes.find: array.index compares element by element in Python objects)
            for t in pointers:   # the base's too: our prototypes may take its pointer types
                needle = t.to_bytes(4, sys.byteorder)
                b = data.find(needle)
                while b >= 0:
                    if not b & 3:
                        q = b >> 2
                        r = bisect.bisect_right(offs, q) - 1
                        if r >= 0 and kinds[r] == K_FUNC_PROTO:
                            rel = q - offs[r] - 4
                            k = rel >> 1
                            if rel >= 0 and not rel & 1 and k < (w[offs[r] + 1] & 0xFFFF) and \
                                    k < protos.get(start + r, k + 1):
                                protos[start + r] = k
                    b = data.find(needle, b + 1)
        except (IndexError, ValueError, OverflowError) as exc:
            raise BtfError(f"{self.origin}: malformed BTF ({exc})") from None
        found = memo[struct_name] = (frozenset(structs), frozenset(pointers), protos)
        return found

    def _own_name(self, name_off: int) -> str:
        off = name_off - self.str_base
        s = self.strings
        if 0 <= off < len(s):
            return s[off:s.find(b"\0", off)].decode("utf-8", "replace")
        return self._str(name_off)

    def functions_with_struct_ptr(self, struct_name: str, ids: dict | None = None):
        """(function, module, 1-based position of the first `struct <struct_name> *` param); `ids`
        as in TypeGraph.functions_with_struct_ptr. Every function's prototype is taken in one pass
        at C speed and looked up in the prototypes that have such a param (_struct_ptr_index)."""
        protos = self._struct_ptr_index(struct_name)[2]
        funcs, rows = self._kind_rows((K_FUNC,))
        types = self._words_at(rows, 2)
        module, name_of = self.module, self._own_name
        for tid, row, proto in compress(zip(funcs, rows, types), map(protos.__contains__, types)):
            name = name_of(self.words[row])
            if ids is not None:
                ids.setdefault((name, module), tid)
            yield name, module, protos[proto] + 1

    def typedefs_with_struct_ptr(self, prefix: str, struct_name: str):
        """(typedef name, 0-based index among the params after the first) for each typedef named
        prefix* of a function (pointer) type with a `struct <struct_name> *` param after its first
        (the raw tracepoints' btf_trace_<name>); what the catalog asks of typedef_func_params(), on
        kind codes."""
        w, offs, start = self.words, self.offs, self.start_id
        pointers = self._struct_ptr_index(struct_name)[1]
        kcode, ref, skip = self._kcode, self._ref, _SKIP
        want = prefix.encode()
        s, own = self.strings, self.str_base
        find = self.kinds.find
        pos = find(K_TYPEDEF)
        while pos >= 0:
            i = offs[pos]
            off = w[i] - own
            if (s.startswith(want, off) if 0 <= off < len(s) else self._str(w[i]).startswith(prefix)):
                tid = w[i + 2]
                for hop in range(2):   # typedef -> [ptr ->] func_proto, qualifiers looked through
                    code = kcode(tid) if tid else 0
                    for _ in range(MAX_CHAIN):
                        if code not in skip:
                            break
                        tid = ref(tid)
                        code = kcode(tid) if tid else 0
                    if code != K_PTR or hop:
                        break
                    tid = ref(tid)
                at = self._proto_words(tid) if tid else None
                if at is not None:
                    pw, p = at
                    types = pw[p + 6:p + 3 + 2 * (pw[p + 1] & 0xFFFF):2]   # the params after the first
                    k = next(compress(count(), map(pointers.__contains__, types)), -1)
                    if k >= 0:
                        yield self._own_name(w[i]), k
            pos = find(K_TYPEDEF, pos + 1)

    # -- inspection ----------------------------------------------------------------------------
    def type(self, tid: int) -> BtfType:
        """The decoded record of type `tid` (own or base)."""
        btf, i = self._at(tid)
        w = btf.words
        info = w[i + 1]
        code, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        t = BtfType(id=tid, kind=KIND_NAMES[code].upper(), name=btf._str(w[i]), kind_flag=kflag, vlen=vlen)
        j = i + 3
        if code in (K_INT, K_STRUCT, K_UNION, K_ENUM, K_ENUM64, K_DATASEC, K_FLOAT):
            t.size = w[i + 2]
        else:
            t.type = w[i + 2]
        if code == K_INT:
            v = w[j]
            t.int_encoding, t.int_offset, t.int_bits = (v >> 24) & 0xF, (v >> 16) & 0xFF, v & 0xFF
        elif code == K_ARRAY:
            t.array = (w[j], w[j + 1], w[j + 2])
        elif code in (K_STRUCT, K_UNION):
            t.members = self._members(tid)
        elif code in (K_ENUM, K_ENUM64):
            t.values = self._enum_values(tid)
        elif code == K_FUNC_PROTO:
            t.params = self._params(tid)
        elif code == K_FUNC:
            t.linkage = vlen
        elif code == K_VAR:
            t.linkage = w[j]
        elif code == K_DATASEC:
            t.secinfo = [(w[j + 3 * k], w[j + 3 * k + 1], w[j + 3 * k + 2]) for k in range(vlen)]
        elif code == K_DECL_TAG:
            v = w[j]
            t.component_idx = v - (1 << 32) if v & 0x80000000 else v
        return t

    def own_ids(self) -> range:
        return range(self.start_id, self.next_id)


def _btf_section(data: bytes, origin: str) -> bytes:
    """The .BTF section of an ELF file."""
    import io

    try:
        from elftools.elf.elffile import ELFFile
        from elftools.common.exceptions import ELFError
    except ImportError:
        raise EnvError("pyelftools is missing: pip install pyelftools") from None
    try:
        section = ELFFile(io.BytesIO(data)).get_section_by_name(".BTF")
    except (ELFError, ValueError, struct.error) as exc:
        raise BtfError(f"{origin}: not a readable ELF file ({exc})") from None
    if section is None:
        raise BtfError(f"{origin}: ELF file has no .BTF section")
    return section.data()


_RUNNING: dict[str, Btf] = {}   # /sys/kernel/btf/* blobs: the running kernel's, fixed until reboot


def read_btf(path: str | os.PathLike, base: Btf | None = None, module: str | None = None) -> Btf:
    """A BTF blob from a raw BTF file or the .BTF section of an ELF file (vmlinux, *.ko).

    The running kernel's base BTF (/sys/kernel/btf/vmlinux) is parsed once per process: the
    feature probes and the kernel view both need it."""
    origin = str(path)
    if base is None and origin == f"{SYS_BTF}/vmlinux":
        if origin not in _RUNNING:
            _RUNNING[origin] = _read_btf(path, None, module, origin)
        return _RUNNING[origin]
    return _read_btf(path, base, module, origin)


def _read_btf(path, base, module, origin) -> Btf:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise BtfError(f"cannot read {origin}: {exc.strerror or exc}") from None
    if data[:4] == b"\x7fELF":
        data = _btf_section(data, origin)
    return Btf(data, base=base, module=module, origin=origin)


class KernelBtf(MultiTypeDB):
    """vmlinux BTF plus loaded modules' split BTF."""

    def __init__(self, vmlinux: Btf, modules: dict[str, Btf] | None = None):
        super().__init__(vmlinux, modules)
        self.vmlinux = vmlinux


def load_kernel_btf(modules: bool = True, root: str | os.PathLike = SYS_BTF) -> KernelBtf:
    """TypeDB over /sys/kernel/btf/vmlinux and (with modules=True) every module's split BTF."""
    root = os.fspath(root)
    vmlinux_path = os.path.join(root, "vmlinux")
    if not os.path.exists(vmlinux_path):
        raise EnvError(f"no BTF at {vmlinux_path} (kernel built without CONFIG_DEBUG_INFO_BTF): "
                       "pass --vmlinux PATH to a vmlinux with debug info")
    vmlinux = read_btf(vmlinux_path)
    mods: dict[str, Btf] = {}
    if modules:
        try:
            names = sorted(name for name in os.listdir(root) if name != "vmlinux")
        except OSError:
            names = []
        for name in names:
            try:
                mods[name] = read_btf(os.path.join(root, name), base=vmlinux, module=name)
            except EnvError as exc:  # a module may unload while we read, or be built elsewhere
                log.warning("skipping BTF of module %s: %s", name, exc)
    return KernelBtf(vmlinux, mods)
