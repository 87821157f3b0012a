"""The type database contract shared by the BTF and DWARF readers (see docs/design.md).

Both readers expose the kernel's types as a graph of numbered type records with the same
shape as BTF (kinds "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef",
"volatile", "const", "restrict", "func", "func_proto", "var", "datasec", "float",
"decl_tag", "type_tag"; id 0 is void). `TypeGraph` implements every public question
(struct_member, functions, enum, ...) once on top of a few record accessors, so a BTF and a
DWARF description of the same C code give the same answers.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from ..records import record

# Kinds that only qualify or rename another type.
QUALIFIERS = frozenset(("typedef", "const", "volatile", "restrict", "type_tag"))
CV = frozenset(("const", "volatile", "restrict", "type_tag"))
MAX_CHAIN = 64  # longest qualifier/typedef chain we follow (guards against cycles in bad input)
MAX_DECL_STEPS = 2000  # work allowed for spelling one type (function pointers nest)
MAX_NEST = 256  # anonymous structs searched below one struct (the kernel nests a handful)

# Member.kind for each resolved record kind.
_MEMBER_KIND = {"int": "int", "ptr": "ptr", "struct": "struct", "union": "union", "enum": "enum",
                "array": "array", "float": "float", "fwd": "struct", "func_proto": "func"}


@record(frozen=True)
class Member:
    """A struct member reached by a path. `offset` counts bytes from the outer struct's start
    for the whole path; for a bitfield the field starts at bit `offset * 8 + bit_offset`
    (0 <= bit_offset < 8) and is `bit_size` bits wide, `size` being its declared type's size."""

    name: str
    offset: int
    size: int
    type_name: str
    kind: str
    bit_offset: int = 0
    bit_size: int = 0
    target_struct: str | None = None


@record(frozen=True)
class Param:
    name: str
    type_name: str
    struct_ptr: str | None = None  # "sk_buff" for struct sk_buff * (through typedefs/const/volatile)


@record(frozen=True)
class Func:
    name: str
    params: tuple[Param, ...]
    module: str | None = None


class BadTypeInfo(KeyError):
    """Raised for malformed or unexpected type graphs reached through a lookup (a KeyError)."""


class TypeGraph:
    """Answers the TypeDB questions from record accessors a reader supplies.

    Subclasses implement: _kind(tid) -> str, _name(tid) -> str ("" if anonymous),
    _ref(tid) -> int (target of ptr/typedef/qualifiers/func/var), _size(tid) -> int,
    _members(tid) -> list[(name, tid, bit_offset, bitfield_size)] (bit_offset from the struct start),
    _params(tid) -> list[(name, tid)] (a trailing ("", 0) means "..."),
    _enum_values(tid) -> list[(name, value)], _array(tid) -> (elem_tid, nelems),
    _fwd_union(tid) -> bool, _lookup(kind_group, name) -> list[tid] (kind_group in
    "struct", "enum", "typedef", "func"), _func_ids() -> Iterable[tid].
    """

    module: str | None = None

    # -- resolution --------------------------------------------------------------------------
    def _strip(self, tid: int, kinds=QUALIFIERS) -> int:
        for _ in range(MAX_CHAIN):
            if tid == 0 or self._kind(tid) not in kinds:
                return tid
            tid = self._ref(tid)
        raise BadTypeInfo(f"type chain too long at type {tid} (cycle in type info?)")

    def resolve(self, tid: int) -> int:
        """The type behind typedefs and qualifiers."""
        return self._strip(tid)

    def struct_ptr_target(self, tid: int) -> str | None:
        """"X" if tid is (through typedefs/qualifiers) a pointer to struct/union X, else None."""
        try:
            tid = self._strip(tid)
            if tid == 0 or self._kind(tid) != "ptr":
                return None
            target = self._strip(self._ref(tid))
        except BadTypeInfo:
            return None
        if target and self._kind(target) in ("struct", "union", "fwd"):
            return self._name(target) or None
        return None

    def type_size(self, tid: int) -> int:
        scale = 1
        for _ in range(MAX_CHAIN):
            if tid == 0:
                return 0
            kind = self._kind(tid)
            if kind in QUALIFIERS:
                tid = self._ref(tid)
            elif kind == "ptr":
                return scale * self._pointer_size()
            elif kind == "array":
                tid, n = self._array(tid)
                scale *= n
            else:
                return scale * self._size(tid)
        raise BadTypeInfo(f"type chain too long at type {tid}")

    def _pointer_size(self) -> int:
        return 8

    # -- C spelling ----------------------------------------------------------------------------
    def type_name(self, tid: int) -> str:
        """C spelling of a type: "struct net_device *", "__u32", "char[16]", "int (*)(struct sk_buff *)"."""
        cache = self.__dict__.setdefault("_type_name_cache", {})
        name = cache.get(tid)
        if name is None:
            name = self._decl(tid, "", 0, [MAX_DECL_STEPS]).strip()
            cache[tid] = name
        return name

    def _decl(self, tid: int, inner: str, depth: int, budget: list) -> str:
        """Declarator-style spelling: the type `tid` applied around `inner`."""
        budget[0] -= 1
        if depth > MAX_CHAIN or budget[0] < 0:
            return "?" + inner
        if tid == 0:
            return _join("void", inner)
        kind = self._kind(tid)
        name = self._name(tid)
        if kind in ("int", "float", "typedef"):
            return _join(name or "?", inner)
        if kind in ("struct", "union", "enum"):
            return _join(f"{kind} {name or '(anon)'}", inner)
        if kind == "fwd":
            return _join(f"{'union' if self._fwd_union(tid) else 'struct'} {name}", inner)
        if kind == "ptr":
            return self._decl(self._ref(tid), "*" + inner, depth + 1, budget)
        if kind in ("const", "volatile", "restrict"):
            ref = self._ref(tid)
            if ref and self._kind(ref) == "ptr":  # qualifies the pointer itself: "char *const"
                return self._decl(ref, kind + (" " + inner if inner else ""), depth + 1, budget)
            return f"{kind} {self._decl(ref, inner, depth + 1, budget)}"
        if kind == "type_tag":
            return self._decl(self._ref(tid), inner, depth + 1, budget)
        if kind == "array":
            elem, n = self._array(tid)
            suffix = f"[{n}]"
            if inner.startswith("*"):
                inner = f"({inner})"
            return self._decl(elem, inner + suffix, depth + 1, budget)
        if kind == "func_proto":
            args = ", ".join(self._decl(t, "", depth + 1, budget).strip() if t or p else "..."
                             for p, t in self._params(tid)) or "void"
            if inner.startswith("*"):
                inner = f"({inner})"
            return self._decl(self._ref(tid), f"{inner}({args})", depth + 1, budget)
        if kind == "func":
            return self._decl(self._ref(tid), name, depth + 1, budget)
        return _join(name or kind, inner)

    # -- structs -------------------------------------------------------------------------------
    def _struct_id(self, name: str) -> int | None:
        best = None
        for tid in self._lookup("struct", name):
            kind = self._kind(tid)
            if kind in ("struct", "union"):
                if self._members(tid) or self._size(tid):
                    return tid
                best = best or tid
        return best

    def has_struct(self, name: str) -> bool:
        return self._struct_id(name) is not None

    def struct_size(self, name: str) -> int:
        tid = self._struct_id(name)
        if tid is None:
            raise KeyError(f"no struct {name} in the kernel's type info")
        return self._size(tid)

    def struct_members(self, name: str) -> list[str]:
        """Member names as C sees them (members of anonymous structs/unions included)."""
        tid = self._struct_id(name)
        if tid is None:
            raise KeyError(f"no struct {name} in the kernel's type info")
        return self._visible_names(tid)

    def _nested_aggregate(self, tid: int, seen: set) -> bool:
        return bool(tid) and tid not in seen and len(seen) < MAX_NEST and self._kind(tid) in ("struct", "union")

    def _visible_names(self, tid: int, seen: set | None = None) -> list[str]:
        seen = set() if seen is None else seen
        seen.add(tid)
        out = []
        for mname, mtid, _bit, _size in self._members(tid):
            if mname:
                out.append(mname)
            else:
                inner = self._strip(mtid)
                if self._nested_aggregate(inner, seen):
                    out.extend(self._visible_names(inner, seen))
        return out

    def _find_member(self, tid: int, name: str, seen: set | None = None):
        """(bit offset from tid's start, member tid, bitfield size) of `name`, searching anonymous
        members (each anonymous struct is searched once: bad input can't make this explode)."""
        seen = set() if seen is None else seen
        seen.add(tid)
        for mname, mtid, bit, bsize in self._members(tid):
            if mname == name:
                return bit, mtid, bsize
            if not mname:
                inner = self._strip(mtid)
                if self._nested_aggregate(inner, seen):
                    found = self._find_member(inner, name, seen)
                    if found is not None:
                        return bit + found[0], found[1], found[2]
        return None

    def struct_member(self, struct_name: str, path: str) -> Member:
        """The member at `path` ("len", "__sk_common.skc_net", "ns.inum") of struct `struct_name`."""
        tid = self._struct_id(struct_name)
        if tid is None:
            raise KeyError(f"no struct {struct_name} in the kernel's type info")
        parts = path.split(".")
        if not path or any(not p for p in parts):
            raise KeyError(f"bad member path {path!r} for struct {struct_name}")
        bits = 0
        where = struct_name
        mtid = tid
        bsize = 0
        for i, part in enumerate(parts):
            cur = self._strip(mtid)
            if i and (not cur or self._kind(cur) not in ("struct", "union")):
                raise KeyError(f"{where} is not a struct or union (it is {self.type_name(mtid)}); "
                               f"cannot look up {part!r} in it")
            found = self._find_member(cur, part)
            if found is None:
                names = ", ".join(self._visible_names(cur))
                raise KeyError(f"{self.type_name(cur) if i else 'struct ' + struct_name} has no member "
                               f"{part!r}; members: {names}")
            bits += found[0]
            mtid, bsize = found[1], found[2]
            where = f"{where}.{part}"
        resolved = self._strip(mtid)
        kind = _MEMBER_KIND.get(self._kind(resolved), "int") if resolved else "void"
        return Member(name=parts[-1], offset=bits // 8, size=self.type_size(mtid),
                      type_name=self.type_name(mtid), kind=kind,
                      bit_offset=(bits % 8) if bsize else 0, bit_size=bsize,
                      target_struct=self.struct_ptr_target(mtid))

    # -- functions -----------------------------------------------------------------------------
    def _proto_params(self, proto: int) -> tuple[Param, ...]:
        memo = self.__dict__.setdefault("_param_memo", {})
        out = []
        for pname, ptid in self._params(proto):
            param = memo.get((pname, ptid))
            if param is None:
                if ptid == 0 and not pname:
                    param = Param("...", "...", None)
                else:
                    param = Param(pname, self.type_name(ptid), self.struct_ptr_target(ptid))
                memo[(pname, ptid)] = param
            out.append(param)
        return tuple(out)

    def _func_proto(self, fid: int) -> int | None:
        proto = self._strip(self._ref(fid))
        return proto if proto and self._kind(proto) == "func_proto" else None

    def functions(self) -> Iterator[Func]:
        for fid in self._func_ids():
            proto = self._func_proto(fid)
            if proto is not None:
                yield Func(self._name(fid), self._proto_params(proto), self.module)

    def func_params(self, func_name: str) -> tuple[Param, ...]:
        for fid in self._lookup("func", func_name):
            proto = self._func_proto(fid)
            if proto is not None:
                return self._proto_params(proto)
        raise KeyError(f"no function {func_name} in the kernel's type info")

    def typedef_func_params(self, typedef_name: str) -> tuple[Param, ...]:
        """Params of a function-pointer typedef (btf_trace_<tp>: first param is the void * context)."""
        for tid in self._lookup("typedef", typedef_name):
            target = self._strip(self._ref(tid))
            if target and self._kind(target) == "ptr":
                target = self._strip(self._ref(target))
            if target and self._kind(target) == "func_proto":
                return self._proto_params(target)
        raise KeyError(f"no function-pointer typedef {typedef_name} in the kernel's type info")

    def typedef_names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self._names("typedef") if n.startswith(prefix))

    def functions_with_struct_ptr(self, struct_name: str,
                                  ids: dict | None = None) -> Iterator[tuple[str, str | None, int]]:
        """(function, module, 1-based position of its first `struct <struct_name> *` param).
        `ids`, when given, gets (function, module) -> the type id of the first record found (the
        catalog's fentry ids, without indexing every function name for them)."""
        memo: dict[int, bool] = {}
        for fid in self._func_ids():
            proto = self._func_proto(fid)
            if proto is None:
                continue
            for pos, (_pname, ptid) in enumerate(self._params(proto), 1):
                hit = memo.get(ptid)
                if hit is None:
                    hit = memo[ptid] = self.struct_ptr_target(ptid) == struct_name
                if hit:
                    name = self._name(fid)
                    if ids is not None:
                        ids.setdefault((name, self.module), fid)
                    yield name, self.module, pos
                    break

    # -- enums ---------------------------------------------------------------------------------
    def enum(self, name: str) -> dict[str, int]:
        for tid in self._lookup("enum", name):
            values = self._enum_values(tid)
            if values:
                return dict(values)
        raise KeyError(f"no enum {name} in the kernel's type info")

    def enum_name(self, name: str, value: int) -> str | None:
        """The enumerator of enum `name` with this value (first one), or None."""
        try:
            items = self.enum(name)
        except KeyError:
            return None
        for key, val in items.items():
            if val == value:
                return key
        return None

    # -- subclass hooks with defaults ------------------------------------------------------------
    def _names(self, group: str) -> Iterable[str]:
        raise NotImplementedError


def _join(base: str, inner: str) -> str:
    if not inner:
        return base
    if inner.startswith("["):
        return base + inner
    return f"{base} {inner}"


def short_enum_name(full: str, prefixes: tuple[str, ...] = ("SKB_DROP_REASON_", "SKB_")) -> str:
    """"SKB_DROP_REASON_NETFILTER_DROP" -> "NETFILTER_DROP"."""
    for prefix in prefixes:
        if full.startswith(prefix) and len(full) > len(prefix):
            return full[len(prefix):]
    return full


def drop_reason_name(typedb, value: int) -> str | None:
    """Short name of a `enum skb_drop_reason` value ("NETFILTER_DROP"), None if unknown."""
    full = typedb.enum_name("skb_drop_reason", value)
    return short_enum_name(full) if full else None


class MultiTypeDB:
    """vmlinux plus module type DBs: lookups try vmlinux first; functions carry their module."""

    def __init__(self, primary: TypeGraph, modules: dict[str, TypeGraph] | None = None):
        self.primary = primary
        self.modules = dict(modules or {})

    def _dbs(self):
        yield self.primary
        yield from self.modules.values()

    def _first(self, method: str, *args):
        err = None
        for db in self._dbs():
            try:
                return getattr(db, method)(*args)
            except KeyError as exc:
                if err is None:
                    err = exc
        raise err if err is not None else KeyError(args[0] if args else method)

    def struct_member(self, struct_name: str, path: str) -> Member:
        if self.primary.has_struct(struct_name):
            return self.primary.struct_member(struct_name, path)
        return self._first("struct_member", struct_name, path)

    def struct_members(self, struct_name: str) -> list[str]:
        return self._first("struct_members", struct_name)

    def struct_size(self, struct_name: str) -> int:
        return self._first("struct_size", struct_name)

    def has_struct(self, name: str) -> bool:
        return any(db.has_struct(name) for db in self._dbs())

    def functions(self) -> Iterator[Func]:
        for db in self._dbs():
            yield from db.functions()

    def functions_with_struct_ptr(self, struct_name: str, ids: dict | None = None):
        for db in self._dbs():
            yield from db.functions_with_struct_ptr(struct_name, ids)

    def typedefs_with_struct_ptr(self, prefix: str, struct_name: str):
        for db in self._dbs():
            yield from db.typedefs_with_struct_ptr(prefix, struct_name)

    def func_params(self, func_name: str) -> tuple[Param, ...]:
        return self._first("func_params", func_name)

    def typedef_func_params(self, typedef_name: str) -> tuple[Param, ...]:
        return self._first("typedef_func_params", typedef_name)

    def typedef_names(self, prefix: str = "") -> list[str]:
        names = set()
        for db in self._dbs():
            names.update(db.typedef_names(prefix))
        return sorted(names)

    def enum(self, name: str) -> dict[str, int]:
        return self._first("enum", name)

    def enum_name(self, name: str, value: int) -> str | None:
        for db in self._dbs():
            try:
                db.enum(name)
            except KeyError:
                continue
            return db.enum_name(name, value)
        return None
