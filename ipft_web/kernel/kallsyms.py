"""Kernel symbols: /proc/kallsyms, the kprobe blacklist and ftrace's available_filter_functions.

`load()` gives a `Kallsyms` with the text (t/T) symbols: how often each name occurs (kprobe-multi
refuses names that occur twice), their addresses and modules, and `symbolize(addr)` for event
decoding (bisect over sorted addresses). The two tracefs/debugfs lists are read only if present
and readable; nothing here mounts anything.
"""
from __future__ import annotations

import bisect
import errno
import re
from collections import Counter
from operator import itemgetter
from pathlib import Path

KALLSYMS = "/proc/kallsyms"
TRACING_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
BLACKLIST = "/sys/kernel/debug/kprobes/blacklist"
MAX_FUNC_SIZE = 1 << 20   # an address further than this past the last symbol is not in it

# "ffffffff81000000 T name" or "ffffffffc0a01000 t name\t[module]"
_LINE = re.compile(r"^([0-9a-fA-F]+) [tT] ([^\t\n]+)", re.M)
_NAME = re.compile(r"^[0-9a-fA-F]+ [tT] ([^\t\n]+)", re.M)
_MODULE = re.compile(r"^[0-9a-fA-F]+ [tT] ([^\t\n]+)\t\[([^\]\n]+)\]", re.M)


class Kallsyms:
    """Text symbols of the running kernel, from /proc/kallsyms text (or any text in its format).

    Names are counted at once; addresses are parsed on first use."""

    def __init__(self, text: str = ""):
        self._text = text
        self.counts: Counter[str] = Counter(_NAME.findall(text))
        self._modules: dict[str, str] = {}
        for name, mod in _MODULE.findall(text):
            self._modules.setdefault(name, mod)
        self._sorted: list[int] | None = None
        self._sorted_names: list[str] = []
        self._by_name: dict[str, list[int]] | None = None
        first = _LINE.search(text)
        self.has_addresses = bool(first and first.group(1).strip("0"))

    @classmethod
    def parse(cls, text: str) -> "Kallsyms":
        return cls(text)

    # -- names ---------------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self.counts

    def __len__(self) -> int:
        return sum(self.counts.values())

    def names(self) -> set[str]:
        return set(self.counts)

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    def is_duplicate(self, name: str) -> bool:
        return self.counts.get(name, 0) > 1

    def duplicates(self) -> set[str]:
        return {n for n, c in self.counts.items() if c > 1}

    def module(self, name: str) -> str | None:
        return self._modules.get(name)

    # -- addresses -----------------------------------------------------------------------------
    def _build(self) -> None:
        """Parse the addresses once: by name, and sorted for symbolize()."""
        pairs = _LINE.findall(self._text) if self.has_addresses else []
        addrs = [int(a, 16) for a, _n in pairs]
        names = [n for _a, n in pairs]
        by_name = {n: [a] for n, a in zip(names, addrs)}
        dups = self.duplicates()
        if dups:
            for n in dups:
                by_name[n] = []
            for n, a in zip(names, addrs):
                if n in dups:
                    by_name[n].append(a)
        self._by_name = by_name
        ordered = sorted(zip(addrs, names), key=itemgetter(0))  # stable: file order among aliases
        self._sorted = [a for a, _n in ordered]
        self._sorted_names = [n for _a, n in ordered]

    def addresses(self, name: str) -> list[int]:
        """Every address of text symbol `name` (empty when unknown or addresses are hidden)."""
        if self._by_name is None:
            self._build()
        return list(self._by_name.get(name, ()))

    def symbolize(self, addr: int) -> str | None:
        """Name of the text symbol containing `addr` (the nearest one at or below it; of several
        names at one address, the last listed)."""
        if self._sorted is None:
            self._build()
        if not addr or not self._sorted:
            return None
        i = bisect.bisect_right(self._sorted, addr) - 1
        if i < 0:
            return None
        if i == len(self._sorted) - 1 and addr - self._sorted[i] > MAX_FUNC_SIZE:
            return None
        return self._sorted_names[i]

    def symbolize_offset(self, addr: int) -> str | None:
        """"name+0x1f" for an address inside a function."""
        name = self.symbolize(addr)
        if name is None:
            return None
        i = bisect.bisect_right(self._sorted, addr) - 1
        off = addr - self._sorted[i]
        return f"{name}+0x{off:x}" if off else name


def load(path: str = KALLSYMS) -> Kallsyms:
    """Text symbols of /proc/kallsyms; an empty table if it is unreadable."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return Kallsyms("")
    return Kallsyms(text)


def _read_list(path: Path) -> tuple[str | None, str]:
    try:
        return path.read_text(errors="replace"), f"read {path}"
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
    text, why = _read_list(Path(path))
    if text is None:
        if not Path(path).parent.exists():
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
        text, why = _read_list(Path(d) / "available_filter_functions")
        if text is None:
            whys.append(why)
            continue
        names = set()
        for line in text.splitlines():
            parts = line.split()
            if not parts:
                continue
            name = parts[1] if len(parts) > 1 and _is_hex(parts[0]) and not parts[1].startswith("[") else parts[0]
            names.add(name)
        return names, why
    return None, "; ".join(whys)


def _is_hex(s: str) -> bool:
    return len(s) >= 8 and all(c in "0123456789abcdefABCDEF" for c in s)
