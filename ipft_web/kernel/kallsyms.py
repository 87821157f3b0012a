"""Kernel symbols: /proc/kallsyms, the kprobe blacklist and ftrace's available_filter_functions.

`load()` gives a `Kallsyms` with the text (t/T) symbols: how often each name occurs (kprobe-multi
refuses names that occur twice), their addresses and modules, and `symbolize(addr)` for event
decoding (bisect over sorted addresses). The two tracefs/debugfs lists are read only if present
and readable; nothing here mounts anything.
"""
from __future__ import annotations

import bisect
import errno
import os
import re
import threading
from itertools import compress
from operator import itemgetter

KALLSYMS = "/proc/kallsyms"
TRACING_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
BLACKLIST = "/sys/kernel/debug/kprobes/blacklist"
MAX_FUNC_SIZE = 1 << 20   # an address further than this past the last symbol is not in it
MODULE_TEXT = "/sys/module/{}/sections/.text"
MAX_HEAD = 4 << 20        # read_text_bases: _text further into kallsyms than this is not looked for
_MODULE_NAME = re.compile(r"[A-Za-z0-9_\-]{1,128}")

# "ffffffff81000000 T name" or "ffffffffc0a01000 t name\t[module]"
_ENTRY = re.compile(r"^([0-9a-fA-F]+) [tT] ([^\t\n]+)(?:\t\[([^\]\n]+)\])?", re.M)


CHUNK = 1 << 18
_NAME = itemgetter(1)

# -- reading ahead ---------------------------------------------------------------------------------
# The kernel writes kallsyms and ftrace's lists as they are read: seconds under emulation, spent in
# the kernel, not in Python. prefetch() reads them in threads while the caller parses type info;
# the next read of each (load(), _read_list()) takes what its thread read, once.
_ahead: dict = {}


class _ReadAhead(threading.Thread):
    def __init__(self, path: str):
        super().__init__(name=f"ipft-read {path}", daemon=True)
        self.path, self.text, self.error = path, None, None

    def run(self):
        try:
            with open(self.path, errors="replace") as f:
                self.text = f.read()
        except OSError as exc:
            self.error = exc


def prefetch(paths) -> None:
    """Start reading each of `paths` in a thread of its own."""
    for path in paths:
        if path not in _ahead:
            _ahead[path] = reader = _ReadAhead(path)
            reader.start()


def _read_text(path: str) -> str:
    """The text of `path`: read ahead if it was, else now. OSError as open() and read() raise it."""
    reader = _ahead.pop(path, None)
    if reader is not None:
        reader.join()
        if reader.error is not None:
            raise reader.error
        return reader.text
    with open(path, errors="replace") as f:
        return f.read()


_children: dict = {}   # path -> kallsyms_fork.Child


def forget_prefetched() -> None:
    """Drop what was read ahead and not taken (a later read must see the kernel of then), and end
    the child that read kallsyms."""
    _ahead.clear()
    while _children:
        _children.popitem()[1].close()


def prefetch_kernel_lists() -> None:
    """kallsyms and the first ftrace function list there is: kallsyms by a forked child that also
    parses it (kallsyms_fork) where this process has no other thread, else in a thread."""
    lists = [os.path.join(d, "available_filter_functions") for d in TRACING_DIRS]
    paths = [KALLSYMS] + [p for p in lists if os.path.exists(p)][:1]
    from . import kallsyms_fork
    if KALLSYMS not in _children and kallsyms_fork.usable():   # first: forked before any thread starts
        try:
            _children[KALLSYMS] = kallsyms_fork.Child(KALLSYMS)
            paths.remove(KALLSYMS)
        except OSError:
            pass
    prefetch(paths)


def load_for_catalog():
    """What the catalog and the kernel view's first read ask of kallsyms: the forked child's
    answers (kallsyms_fork.Asked) when prefetch_kernel_lists() started one, else load()."""
    child = _children.get(KALLSYMS)
    if child is not None:
        from .kallsyms_fork import Asked
        return Asked(child, KALLSYMS)
    return load()


def _findall_chunked(pattern, text: str) -> list:
    """pattern.findall(text) for a line-anchored pattern, a quarter MB at a time: one findall over
    all of kallsyms would hold the GIL for seconds under emulation, stalling the thread that traces
    while another stores the kernel view."""
    out: list = []
    start = 0
    while start < len(text):
        end = text.find("\n", start + CHUNK)
        end = len(text) if end < 0 else end + 1
        out.extend(pattern.findall(text, start, end))
        start = end
    return out


class Kallsyms:
    """Text symbols of the running kernel, from /proc/kallsyms text (or any text in its format).

    One regex pass at load; the address tables are made on first use (they cost more than the
    names, and a trace that never symbolizes an address never needs the sorted one)."""

    def __init__(self, text: str = "", entries: list | None = None):
        """From kallsyms text, or from what _ENTRY.findall() gives of it (`entries`, in order)."""
        if entries is None:
            entries = _findall_chunked(_ENTRY, text)   # [(hex address, name, module or "")]
        self._entries = entries
        self._total = len(entries)
        self._names: tuple | None = None        # (first address by name, duplicates, modules)
        self._table: SymbolTable | None = None
        self._dup_addrs: dict[str, list[int]] | None = None
        self.has_addresses = bool(entries and entries[0][0].strip("0"))

    def _index(self) -> tuple:
        """The name index, made on first use (a view from the kernel build cache asks only
        addresses_of(), which needs none)."""
        if self._names is None:
            first: dict[str, str] = {}
            dups: set[str] = set()
            modules: dict[str, str] = {}
            for hexaddr, name, mod in reversed(self._entries):   # reversed: the first listed wins
                if name in first:
                    dups.add(name)
                first[name] = hexaddr
                if mod:
                    modules[name] = mod
            self._names = (first, dups, modules)
        return self._names

    @property
    def _first_hex(self) -> dict:
        return self._index()[0]

    @property
    def _dups(self) -> set:
        return self._index()[1]

    @property
    def _modules(self) -> dict:
        return self._index()[2]

    def addresses_of(self, names) -> dict[str, list[int]]:
        """{name: every address, in listing order} for those of `names` listed; one pass."""
        return {name: [addr for addr, _mod in where] for name, where in self.placed_of(names).items()}

    def placed_of(self, names) -> dict[str, list[tuple[int, str]]]:
        """{name: [(address, module or "" for vmlinux), ...] in listing order}; one pass."""
        if not self.has_addresses:
            return {}
        wanted = set(names)
        found: dict[str, list[tuple[int, str]]] = {}
        for hexaddr, name, mod in self._having(wanted):
            found.setdefault(name, []).append((int(hexaddr, 16), mod))
        return found

    def _having(self, names: set):
        """The entries (hex address, name, module) of these names, in listing order; the others are
        passed over at C speed."""
        return compress(self._entries, map(names.__contains__, map(_NAME, self._entries)))

    @classmethod
    def parse(cls, text: str) -> "Kallsyms":
        return cls(text)

    # -- names ---------------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._first_hex

    def __len__(self) -> int:
        return self._total

    def names(self) -> set[str]:
        return set(self._first_hex)

    def count(self, name: str) -> int:
        if name not in self._first_hex:
            return 0
        if name not in self._dups:
            return 1
        return sum(1 for e in self._entries if e[1] == name)

    def is_duplicate(self, name: str) -> bool:
        return name in self._dups

    def duplicates(self) -> set[str]:
        return set(self._dups)

    def module(self, name: str) -> str | None:
        return self._modules.get(name)

    # -- addresses -----------------------------------------------------------------------------
    def addresses(self, name: str) -> list[int]:
        """Every address of text symbol `name`, in listing order (empty when unknown or hidden)."""
        if not self.has_addresses or name not in self._first_hex:
            return []
        if name in self._dups:
            if self._dup_addrs is None:
                found: dict[str, list[int]] = {n: [] for n in self._dups}
                for hexaddr, n, _m in self._having(self._dups):
                    found[n].append(int(hexaddr, 16))
                self._dup_addrs = found
            return list(self._dup_addrs[name])
        return [int(self._first_hex[name], 16)]

    def _build(self) -> None:
        """Addresses sorted for symbolize() (stable: listing order among aliases)."""
        addrs = [int(e[0], 16) for e in self._entries] if self.has_addresses else []
        order = sorted(range(len(addrs)), key=addrs.__getitem__)
        self._table = SymbolTable([addrs[i] for i in order], [self._entries[i][1] for i in order])

    def symbol_table(self) -> "SymbolTable":
        if self._table is None:
            self._build()
        return self._table

    def symbolize(self, addr: int) -> str | None:
        return self.symbol_table().symbolize(addr)

    def symbolize_offset(self, addr: int) -> str | None:
        return self.symbol_table().symbolize_offset(addr)


class SymbolTable:
    """Text symbols sorted by address (ascending; aliases in listing order), for symbolizing."""

    def __init__(self, addrs, names: list[str]):
        if len(addrs) != len(names):
            raise ValueError("symbol table: as many names as addresses")
        self.addrs = addrs      # a list or array('Q') of ints
        self.names = names

    def __len__(self) -> int:
        return len(self.names)

    def _index(self, addr: int) -> int | None:
        if not addr or not self.names:
            return None
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return None
        if i == len(self.names) - 1 and addr - self.addrs[i] > MAX_FUNC_SIZE:
            return None
        return i

    def symbolize(self, addr: int) -> str | None:
        """Name of the text symbol containing `addr` (the nearest one at or below it; of several
        names at one address, the last listed)."""
        i = self._index(addr)
        return None if i is None else self.names[i]

    def symbolize_offset(self, addr: int) -> str | None:
        """"name+0x1f" for an address inside a function."""
        i = self._index(addr)
        if i is None:
            return None
        off = addr - self.addrs[i]
        return f"{self.names[i]}+0x{off:x}" if off else self.names[i]


def load(path: str = KALLSYMS) -> Kallsyms:
    """Text symbols of /proc/kallsyms; an empty table if it is unreadable."""
    try:
        text = _read_text(path)
    except OSError:
        return Kallsyms("")
    return Kallsyms(text)


def _read_list(path: str) -> tuple[str | None, str]:
    try:
        return _read_text(path), f"read {path}"
    except PermissionError:
        return None, f"{path} is not readable (permission denied)"
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None, f"{path} does not exist"
        return None, f"{path} is not readable ({exc.strerror or exc})"


def read_blacklist(path: str = BLACKLIST) -> tuple[set[str] | None, str]:
    """(names in the kprobe blacklist, or None if the file can't be read; what happened).

    Lines look like "0xffffffff81001000-0xffffffff81001020\tname" (debugfs must be mounted;
    we never mount it)."""
    text, why = _read_list(path)
    if text is None:
        if not os.path.exists(os.path.dirname(path)):
            why += " (debugfs not mounted? mount -t debugfs none /sys/kernel/debug)"
        return None, why
    names = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            names.add(parts[1])
    return names, why


def read_available_filter_functions(dirs: tuple[str, ...] = TRACING_DIRS) -> tuple[set[str] | None, str]:
    """(functions ftrace can attach to, or None if no readable list; what happened).

    Lines are "name" or "name [module]"; newer kernels may prefix an address."""
    whys = []
    for d in dirs:
        text, why = _read_list(os.path.join(d, "available_filter_functions"))
        if text is None:
            whys.append(why)
            continue
        if not _ADDR_PREFIX.search(text):   # the usual "name" / "name [module]": one cheap pass
            return {line.partition(" ")[0] for line in text.split("\n") if line}, why
        names = set()
        for line in text.splitlines():
            parts = line.split()
            if not parts:
                continue
            name = parts[1] if len(parts) > 1 and _is_hex(parts[0]) and not parts[1].startswith("[") else parts[0]
            names.add(name)
        return names, why
    return None, "; ".join(whys)


def read_text_bases(modules, path: str = KALLSYMS, module_text: str = MODULE_TEXT) -> dict[str, int] | None:
    """This boot's text bases: {"": vmlinux's _text, module: its .text section} for `modules`, or
    None when one is missing or hidden (kptr_restrict shows zeros). Cheap: kallsyms is generated
    as it is read, and _text is in its first lines (after the per-CPU symbols, if any); a module's
    .text address is a sysfs file (root only)."""
    bases: dict[str, int] = {}
    try:
        with open(path, "rb") as f:
            seen = 0
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == b"_text":
                    bases[""] = int(parts[0], 16)
                    break
                seen += len(line)
                if seen > MAX_HEAD:
                    return None
        for m in sorted(set(modules) - {""}):
            if not _MODULE_NAME.fullmatch(m):
                return None
            with open(module_text.format(m)) as f:
                bases[m] = int(f.read().strip(), 16)
    except (OSError, ValueError):
        return None
    if "" not in bases or not all(bases.values()):
        return None
    return bases


# "ffffffff81001234 name" or "ffffffffc0a01234 name [module]"
_FTRACE_ADDR = re.compile(r"^([0-9a-f]{8,16}) ([^\s\[]+)", re.M)


def read_ftrace_addresses(dirs: tuple[str, ...] = TRACING_DIRS) -> dict[str, list[int]] | None:
    """{name: [ftrace site, ...]} from available_filter_functions_addrs (Linux 6.5+; a fifth of
    kallsyms' size), or None if there is no readable one. A site is where the function's ftrace
    call is: its address, or a few bytes past it (after an endbr)."""
    for d in dirs:
        text, _why = _read_list(os.path.join(d, "available_filter_functions_addrs"))
        if text is None:
            continue
        out: dict[str, list[int]] = {}
        for hexaddr, name in _FTRACE_ADDR.findall(text):
            out.setdefault(name, []).append(int(hexaddr, 16))
        return out if out and any(out.values()) else None
    return None


_ADDR_PREFIX = re.compile(r"^(?:0x)?[0-9a-fA-F]{8,}\s", re.M)


def _is_hex(s: str) -> bool:
    return len(s) >= 8 and all(c in "0123456789abcdefABCDEF" for c in s)
