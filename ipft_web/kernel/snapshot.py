"""What the tracer needs from the kernel view, kept on disk for the rest of this boot.

Reading the kernel (BTF of vmlinux and every module, kallsyms, ftrace's function list, the skb
catalog) is most of an `ipft` start: about 1 s on real hardware, 10 s and more under emulation.
Its results only change when the kernel does: at a reboot, or when a module comes or goes. So the
first run of a boot stores them, and later runs load them instead of reading the kernel again.

Most of it outlives a reboot: only addresses move (KASLR). So each snapshot is also stored
without them, under a key naming the exact build of the kernel and of each loaded module (their
GNU build ids; the content of their BTF where a build id can't be read): build_key. The first
run of a later boot of the same kernel and modules loads that part and moves each function by
its object's text base in this boot (`relative`): KASLR shifts vmlinux, and each module, as one
block, so `_text` (the head of kallsyms) and each module's .text section (sysfs) are all it reads.
Failing that, the addresses come from ftrace's address list (6.5+), which is a fifth of
kallsyms: each function's ftrace site sits a fixed distance past its symbol in a given build (4
bytes with IBT's endbr, else 0), and the part keeps those distances (entry_offsets) from the boot
that had both lists. Without that list, or with any name it does not match, kallsyms gives the
addresses. Derived addresses are checked against kallsyms once it is read (view.store).

The key holds the boot id, the loaded modules (name, size, address), which of the tracing lists
were readable, kptr_restrict, the kernel build, and the stamp of the code that made the view.
Anything else that changes them (a module reloaded at the same address with the same size) is
not seen: deleting <cache dir>/kernel/ or IPFT_CACHE_DIR=off starts from the kernel again.

A snapshot holds: the traceable skb functions (name, module, skb position, duplicate, BTF id,
addresses), the skb tracepoints, kfree_skb's argument slots, the struct offsets the BPF program
is built with, the drop-reason names; and, in a file of its own read on first use, every text
symbol sorted by address (for symbolizing).
Type info itself is not kept: field scripts load BTF when they need it. Files live in
<cache dir>/kernel/ under ipft_web/cachefiles.py's rules (owner, mode, no symlink, exact parse).
"""
from __future__ import annotations

import array
import json
import os
import re
import sys

from .. import __version__, cachefiles
from ..logs import get_logger
from ..records import record, replace

log = get_logger(__name__)

FORMAT = 3
SUBDIR = "kernel"
BUILD_SUBDIR = "kernel-build"
KEEP = 4
SYMBOLS_SUFFIX = ".symbols.json"   # a boot snapshot's symbol table, next to it
SNAPSHOT_GLOB = "?" * 64 + ".json"  # the snapshots themselves (keys are sha256 hex digests)
SYS_BTF = "/sys/kernel/btf"
MAX_FILE = 64 << 20
BOOT_ID = "/proc/sys/kernel/random/boot_id"
MODULES = "/proc/modules"
KERNEL_NOTES = "/sys/kernel/notes"
MODULE_NOTES = "/sys/module/{}/notes/.note.gnu.build-id"
MAX_ENTRY_OFFSET = 64   # an ftrace site further than this past its symbol is not trusted
MAX_RELATIVE = 1 << 32  # a function further than this from its object's text base is not trusted
KPTR_RESTRICT = "/proc/sys/kernel/kptr_restrict"
# Files whose readability changes what the catalog says (a tracefs or debugfs mounted later).
READABLE = ("/sys/kernel/tracing/available_filter_functions",
            "/sys/kernel/debug/tracing/available_filter_functions",
            "/sys/kernel/debug/kprobes/blacklist",
            "/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")
# The code that makes a view: a change to any of these makes earlier snapshots stale.
CODE = ("kernel/btf.py", "kernel/typedb.py", "kernel/catalog.py", "kernel/kallsyms.py", "kernel/view.py",
        "kernel/snapshot.py", "program.py")

_NAME = re.compile(r"[A-Za-z0-9_.$]{1,512}")
_MODULE = re.compile(r"[A-Za-z0-9_\-]{1,128}")


@record
class Snapshot:
    functions: list            # [CatalogEntry], sorted by name (the view's skb_functions())
    extra: dict                # name -> CatalogEntry for traceable functions outside that list (kfree_skbmem)
    catalog_source: str
    tracepoints: list          # [program.Tracepoint]
    kfree_skb_args: dict       # argument -> index in kfree_skb's raw tracepoint: {"skb": 0, "reason": 2, ...}
    offsets: dict | None       # macro -> byte offset; None when the type info lacks a field
    offsets_error: str | None
    reasons: dict              # skb_drop_reason value -> short name
    btf_ids: dict              # function name -> vmlinux BTF FUNC id
    addresses: dict            # function name -> [addresses]
    has_addresses: bool
    symbols: object            # kallsyms.SymbolTable, StoredSymbols (loaded: read on first use), or
                               # None in a view read by this process until stored
    key: str = ""
    entry_offsets: dict | None = None   # function name -> its ftrace site minus its address (see above)
    relative: dict | None = None        # function name -> [[object ("" vmlinux, or module), address
                                        # minus that object's text base], ...] (see above)


# -- key -------------------------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _modules() -> list[str]:
    out = []
    for line in _read(MODULES).splitlines():
        parts = line.split()
        if len(parts) >= 6:
            out.append(f"{parts[0]} {parts[1]} {parts[5]}")   # name, size, address (not the refcount)
        elif parts:
            out.append(parts[0])
    return sorted(out)


def _code_stamp() -> list:
    # abspath, not resolve(): resolve() lstat()s every directory on the way (3 ms each under emulation)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stamp = []
    for rel in CODE:
        try:
            st = os.stat(os.path.join(here, rel))
            stamp.append([rel, st.st_size, st.st_mtime_ns])
        except OSError:
            stamp.append([rel, None, None])
    return stamp


def key() -> str | None:
    """This boot's key, or None when the boot id can't be read (then nothing is cached)."""
    boot = _read(BOOT_ID).strip()
    if not boot:
        return None
    uname = os.uname()
    parts = [FORMAT, __version__, sys.version_info[:2], _code_stamp(), boot, uname.release, uname.version,
             uname.machine, _modules(), [os.access(p, os.R_OK) for p in READABLE], _read(KPTR_RESTRICT).strip(),
             os.geteuid()]
    return cachefiles.sha256(json.dumps(parts).encode()).hexdigest()


def _file_digest(h, path) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    h.update(f"{path.name}\0{len(data)}\0".encode())
    h.update(data)
    return True


def _build_id(path: str) -> str | None:
    """The GNU build id in an ELF notes file (/sys/kernel/notes, a module's notes), or None."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
    except OSError:
        return None
    at = 0
    while at + 12 <= len(data):
        namesz, descsz, kind = (int.from_bytes(data[at + i:at + i + 4], "little") for i in (0, 4, 8))
        name_at = at + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        end = desc_at + ((descsz + 3) & ~3)
        if end > len(data):
            return None
        if kind == 3 and data[name_at:name_at + namesz] == b"GNU\0" and 8 <= descsz <= 64:   # NT_GNU_BUILD_ID
            return data[desc_at:desc_at + descsz].hex()
        at = end
    return None


def build_key() -> str | None:
    """The key of what a view holds that outlives a boot (everything but addresses), or None.

    It names the build of vmlinux and of every loaded module by its GNU build id (what the
    functions, offsets, BTF ids, drop reasons, tracepoints, ftrace's list and the kprobe blacklist
    all come from), with the modules' names and sizes, the kernel release, which lists were
    readable and the code stamp. Where a build id can't be read, the content of every BTF object
    and of ftrace's function list stands in for it (about 10 MB read). Addresses move at every
    boot (KASLR) and are read again."""
    uname = os.uname()
    mods = sorted(" ".join(m.split()[:2]) for m in _modules())
    head = [FORMAT, "build", __version__, sys.version_info[:2], _code_stamp(), uname.release, uname.version,
            uname.machine, mods, [os.access(p, os.R_OK) for p in READABLE], os.geteuid()]
    if not os.path.exists(os.path.join(SYS_BTF, "vmlinux")):
        return None
    ids = [_build_id(KERNEL_NOTES)] + [_build_id(MODULE_NOTES.format(m.split()[0])) for m in mods]
    h = cachefiles.sha256()
    if all(ids):
        h.update(json.dumps([head, "build ids", ids]).encode())
        return h.hexdigest()
    return _content_key(h, head)


def _content_key(h, head: list) -> str | None:
    h.update(json.dumps(head).encode())
    from pathlib import Path   # not on the way to tracing: a boot without a stored view
    root = Path(SYS_BTF)
    try:
        names = sorted(p.name for p in root.iterdir())
    except OSError:
        return None
    if "vmlinux" not in names:
        return None
    for name in names:
        if not _file_digest(h, root / name):
            return None   # a module going away while we look: no key, nothing cached
    for path in READABLE[:2]:   # available_filter_functions
        _file_digest(h, Path(path))
    blacklist = _read(READABLE[2])
    h.update("\n".join(sorted(line.split()[1] for line in blacklist.splitlines() if len(line.split()) >= 2)).encode())
    return h.hexdigest()


def entry_offsets(addresses: dict, ftrace: dict | None) -> dict | None:
    """{name: ftrace site - symbol address} for every name in `addresses` (kallsyms'), from
    ftrace's address list; None unless every name matches with one distance in 0..MAX_ENTRY_OFFSET
    (then later boots read kallsyms)."""
    if not ftrace or not addresses:
        return None
    out = {}
    for name, addrs in addresses.items():
        sites = ftrace.get(name)
        if not sites or len(sites) != len(addrs):
            log.debug("no ftrace entry offset for %s: %d symbols, %d ftrace sites", name, len(addrs),
                      len(sites or ()))
            return None
        deltas = {b - a for a, b in zip(sorted(addrs), sorted(sites))}
        if len(deltas) != 1 or not 0 <= next(iter(deltas)) <= MAX_ENTRY_OFFSET:
            log.debug("no ftrace entry offset for %s: %s", name, sorted(deltas))
            return None
        out[name] = deltas.pop()
    return out


def relative_addresses(placed: dict, bases: dict | None) -> dict | None:
    """{name: [[object, address - its text base], ...]} from kallsyms' placement of each name
    ({name: [(address, module or "")]}) and this boot's text bases; None unless every address
    has a base and lies near it."""
    if not placed or not bases:
        return None
    out = {}
    for name, where in placed.items():
        rows = []
        for addr, obj in where:
            base = bases.get(obj)
            if base is None or not -MAX_RELATIVE < addr - base < MAX_RELATIVE:
                log.debug("no relative address for %s in %r", name, obj)
                return None
            rows.append([obj, addr - base])
        out[name] = rows
    return out


def relative_objects(part: Snapshot) -> set[str]:
    """The objects ("" for vmlinux, module names) whose text bases with_relative_addresses() needs."""
    return {obj for rows in (part.relative or {}).values() for obj, _off in rows}


def with_relative_addresses(part: Snapshot, bases: dict | None, digest: str) -> Snapshot | None:
    """A build part completed with this boot's addresses: each object's text base moved by KASLR
    (one shift for vmlinux, one per module), the functions' places in it did not (same build ids);
    None without relative addresses or a base they need."""
    if not part.relative or not bases:
        return None
    addresses = {}
    for name, rows in part.relative.items():
        if any(obj not in bases for obj, _off in rows):
            return None
        addresses[name] = [bases[obj] + off for obj, off in rows]
    return replace(part, addresses=addresses, has_addresses=True, symbols=None, key=digest)


def with_ftrace_addresses(part: Snapshot, ftrace: dict | None, digest: str) -> Snapshot | None:
    """A build part completed with this boot's addresses from ftrace's address list, or None when
    the part has no entry offsets or the list does not give every name it has them for."""
    if not part.entry_offsets or not ftrace:
        return None
    addresses = {}
    for name, off in part.entry_offsets.items():
        sites = ftrace.get(name)
        if not sites:
            log.debug("%s is not in ftrace's address list: addresses from kallsyms", name)
            return None
        addresses[name] = sorted(a - off for a in sites)
    return replace(part, addresses=addresses, has_addresses=True, symbols=None, key=digest)


def build_part(snap: Snapshot, digest: str) -> Snapshot:
    """`snap` without what a reboot moves (addresses, the symbol table), under the build key."""
    from .kallsyms import SymbolTable
    return replace(snap, addresses={}, has_addresses=False, symbols=SymbolTable(array.array("Q"), []), key=digest)


def with_addresses(part: Snapshot, syms, digest: str) -> Snapshot:
    """A build part completed with this boot's addresses from kallsyms (`syms`), under the boot key;
    its symbol table is made from `syms` when first needed (symbols None)."""
    addresses = syms.addresses_of([f.name for f in [*part.functions, *part.extra.values()]])
    return replace(part, addresses=addresses, has_addresses=bool(getattr(syms, "has_addresses", False)),
                   symbols=None, key=digest)


# -- to and from JSON ------------------------------------------------------------------------------
def to_json(snap: Snapshot) -> dict:
    """Everything but the symbol table (symbols_to_json: a file of its own, read on first use)."""
    return {
        "format": FORMAT, "key": snap.key,
        "functions": [[f.name, f.module, f.pos, bool(f.duplicate)] for f in snap.functions],
        "extra": [[f.name, f.module, f.pos, bool(f.duplicate)] for f in snap.extra.values()],
        "catalog_source": snap.catalog_source,
        "tracepoints": [[t.name, t.group, t.arg] for t in snap.tracepoints],
        "kfree_skb_args": dict(snap.kfree_skb_args),
        "offsets": snap.offsets, "offsets_error": snap.offsets_error,
        "reasons": [[int(v), n] for v, n in sorted(snap.reasons.items())],
        "btf_ids": snap.btf_ids,
        "addresses": snap.addresses,
        "has_addresses": bool(snap.has_addresses),
        "entry_offsets": snap.entry_offsets,
        "relative": snap.relative,
    }


def symbols_to_json(table, digest: str) -> dict:
    addrs = array.array("Q", table.addrs)
    return {"format": FORMAT, "key": digest, "addrs": cachefiles.b64encode(addrs.tobytes()),
            "names": "\n".join(table.names)}


def symbols_from_json(doc: dict, digest: str):
    """A kallsyms.SymbolTable from its JSON; ValueError on anything not as symbols_to_json() writes it."""
    from .kallsyms import SymbolTable
    _want(isinstance(doc, dict) and set(doc) == {"format", "key", "addrs", "names"} and doc["format"] == FORMAT
          and isinstance(doc["addrs"], str) and isinstance(doc["names"], str), "symbols")
    _want(doc["key"] == digest, "symbols key")
    raw = cachefiles.b64decode(doc["addrs"])
    _want(len(raw) % 8 == 0, "symbol addresses")
    addrs = array.array("Q")
    addrs.frombytes(raw)
    names = doc["names"].split("\n") if doc["names"] else []
    _want(len(names) == len(addrs), "symbol table")
    _want(all(addrs[i] <= addrs[i + 1] for i in range(0, len(addrs) - 1, max(1, len(addrs) // 64))),
          "symbol order")
    return SymbolTable(addrs, names)


class StoredSymbols:
    """The symbol table stored next to a boot's snapshot, read when first asked for: most runs
    never symbolize an address, and the table is most of the snapshot (5 MB, 1 s under emulation)."""

    def __init__(self, path: str, digest: str):
        self.path = path
        self.digest = digest

    def load(self):
        """The table, or None when it is absent, untrusted or damaged (then kallsyms gives it)."""
        try:
            doc = cachefiles.read_json(self.path, MAX_FILE, "kernel symbols")
            return None if doc is None else symbols_from_json(doc, self.digest)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring the stored kernel symbols %s: %s", self.path, exc)
            return None


def _want(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(f"bad {what}")


def _int(v, lo: int = 0, hi: int = (1 << 64) - 1) -> bool:
    return type(v) is int and lo <= v <= hi


# Checks over whole columns at once: a view holds thousands of functions, and checking them one
# by one in Python took a tenth of a second of every start under emulation.
def _names(values, pattern=_NAME) -> bool:
    """Every value a str matching `pattern`."""
    values = list(values)
    return not values or (set(map(type, values)) == {str} and all(map(pattern.fullmatch, values)))


def _ints(values, lo: int = 0, hi: int = (1 << 64) - 1) -> bool:
    """Every value an int (not a bool) in lo..hi."""
    values = list(values)
    return not values or (set(map(type, values)) == {int} and lo <= min(values) and max(values) <= hi)


def _entries(rows, CatalogEntry) -> list:
    _want(set(map(type, rows)) <= {list} and set(map(len, rows)) <= {4}, "function entry")
    if not rows:
        return []
    names, modules, pos, dups = zip(*rows)
    _want(_names(names), "function name")
    _want(_names({m for m in modules if m is not None}, _MODULE), "module name")
    _want(_ints(pos, 0, 64) and set(map(type, dups)) <= {bool}, "function entry")
    return [CatalogEntry(*r) for r in rows]


def _lists(values, most: int = 64) -> list:
    """The items of a column of lists (each 1..most long), flattened; ValueError otherwise."""
    values = list(values)
    _want(set(map(type, values)) <= {list} and (not values or (min(map(len, values)) > 0 and max(map(len, values)) <= most)),
          "list")
    return [item for v in values for item in v]


def from_json(doc: dict, digest: str) -> Snapshot:
    """A Snapshot from its JSON; ValueError on anything not exactly as to_json() writes it."""
    from ..program import Tracepoint
    from .catalog import CatalogEntry
    from .kallsyms import SymbolTable

    _want(isinstance(doc, dict) and doc.get("format") == FORMAT, "format")
    _want(doc.get("key") == digest, "key")
    functions = _entries(_list(doc, "functions"), CatalogEntry)
    extra = {e.name: e for e in _entries(_list(doc, "extra"), CatalogEntry)}
    source = doc.get("catalog_source")
    _want(isinstance(source, str) and len(source) < 100, "catalog source")
    tps = []
    for row in _list(doc, "tracepoints"):
        _want(isinstance(row, list) and len(row) == 3, "tracepoint")
        name, group, arg = row
        _want(isinstance(name, str) and _NAME.fullmatch(name) is not None, "tracepoint name")
        _want(group is None or (isinstance(group, str) and _NAME.fullmatch(group) is not None), "tracepoint group")
        _want(_int(arg, 0, 64), "tracepoint argument")
        tps.append(Tracepoint(name=name, group=group, arg=arg))
    kargs = doc.get("kfree_skb_args")
    _want(isinstance(kargs, dict) and len(kargs) <= 8 and all(
        isinstance(k, str) and re.fullmatch(r"[a-z_]{1,32}", k) and (v is None or _int(v, 0, 64))
        for k, v in kargs.items()), "kfree_skb arguments")
    offsets, err = doc.get("offsets"), doc.get("offsets_error")
    _want((isinstance(offsets, dict) and err is None and all(
        isinstance(k, str) and re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", k) and _int(v, 0, 1 << 20)
        for k, v in offsets.items())) or (offsets is None and isinstance(err, str) and len(err) < 1000), "offsets")
    reasons = {}
    for row in _list(doc, "reasons"):
        _want(isinstance(row, list) and len(row) == 2 and _int(row[0], 0, 1 << 32) and isinstance(row[1], str)
              and _NAME.fullmatch(row[1]) is not None, "drop reason")
        reasons[row[0]] = row[1]
    btf_ids = doc.get("btf_ids")
    _want(isinstance(btf_ids, dict) and set(map(type, btf_ids)) <= {str} and _ints(btf_ids.values(), 1, 1 << 31),
          "BTF ids")
    addresses = doc.get("addresses")
    _want(isinstance(addresses, dict) and set(map(type, addresses)) <= {str}
          and _ints(_lists(addresses.values()), 1), "addresses")
    has = doc.get("has_addresses")
    _want(type(has) is bool, "has_addresses")
    eoffs = doc.get("entry_offsets")
    _want(eoffs is None or (isinstance(eoffs, dict) and _names(eoffs) and _ints(eoffs.values(), 0, MAX_ENTRY_OFFSET)),
          "entry offsets")
    rel = doc.get("relative")
    if rel is not None:
        _want(isinstance(rel, dict) and _names(rel), "relative addresses")
        pairs = _lists(rel.values())
        _want(set(map(type, pairs)) <= {list} and set(map(len, pairs)) <= {2}, "relative addresses")
        objects = {r[0] for r in pairs}
        _want(_names(objects - {""}, _MODULE) and _ints((r[1] for r in pairs), 1 - MAX_RELATIVE, MAX_RELATIVE - 1),
              "relative addresses")
    _want("symbols" not in doc, "format")
    return Snapshot(functions=functions, extra=extra, catalog_source=source, tracepoints=tps,
                    kfree_skb_args=dict(kargs), offsets=offsets, offsets_error=err, reasons=reasons,
                    btf_ids=btf_ids, addresses=addresses, has_addresses=has,
                    symbols=SymbolTable(array.array("Q"), []), key=digest, entry_offsets=eoffs,
                    relative=rel)


def _list(doc: dict, name: str) -> list:
    v = doc.get(name)
    _want(isinstance(v, list) and len(v) <= 1 << 20, name)
    return v


# -- on disk ---------------------------------------------------------------------------------------
def load(digest: str | None, sub: str = SUBDIR) -> Snapshot | None:
    """This boot's snapshot (or with sub=BUILD_SUBDIR this build's part), or None (absent, no
    cache, untrusted, or damaged)."""
    if digest is None:
        return None
    where = cachefiles.cache_dir(sub)
    if where is None:
        return None
    path = os.path.join(where, f"{digest}.json")
    try:
        doc = cachefiles.read_json(path, MAX_FILE, "kernel view")
        if doc is None:
            return None
        snap = from_json(doc, digest)
        if sub == SUBDIR:
            snap.symbols = StoredSymbols(os.path.join(where, f"{digest}{SYMBOLS_SUFFIX}"), digest)
        return snap
    except (OSError, ValueError, TypeError, AttributeError) as exc:   # JSONDecodeError is a ValueError
        log.warning("ignoring the stored kernel view %s: %s", path, exc)
        return None


def save(snap: Snapshot, base: os.PathLike | str | None = None, sub: str = SUBDIR):
    """Store `snap` under the cache directory `base` (default: IPFT_CACHE_DIR now)."""
    if not snap.key:
        return None
    where = cachefiles.cache_dir(sub, create=True, base=base)
    if where is None:
        return None
    table = snap.symbols
    if sub == SUBDIR and table is not None and not isinstance(table, StoredSymbols):
        # the table first: a snapshot is never there without it (unless someone deletes it)
        if cachefiles.write_json(where, f"{snap.key}{SYMBOLS_SUFFIX}", symbols_to_json(table, snap.key),
                                 "kernel symbols") is None:
            return None
    path = cachefiles.write_json(where, f"{snap.key}.json", to_json(snap), "kernel view")
    if path is not None:
        cachefiles.prune(where, KEEP, SNAPSHOT_GLOB)   # the snapshots; then their tables
        for orphan in path.parent.glob(f"*{SYMBOLS_SUFFIX}"):
            if not (path.parent / (orphan.name[:-len(SYMBOLS_SUFFIX)] + ".json")).exists():
                try:
                    orphan.unlink()
                except OSError:
                    pass
    return path


def remove(digest: str | None, base: os.PathLike | str | None = None, sub: str = SUBDIR) -> None:
    """Delete one stored snapshot (a build part found wrong)."""
    where = cachefiles.cache_dir(sub, base=base)
    if digest and where is not None:
        try:
            os.unlink(os.path.join(where, f"{digest}.json"))
        except OSError:
            pass


def clear() -> int:
    return cachefiles.clear(cachefiles.cache_dir(SUBDIR)) + cachefiles.clear(cachefiles.cache_dir(BUILD_SUBDIR))
