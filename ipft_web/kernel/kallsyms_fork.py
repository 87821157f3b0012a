"""kallsyms read and parsed in a forked child while the first start of a boot parses type info.

Reading the kernel's symbols is two costs in a row: the kernel writes /proc/kallsyms as it is read
(a second under emulation), then Python parses it (as long again). A thread can overlap only the
first with the caller's BTF parse: the parse needs the GIL the caller holds. A child process has
a GIL of its own, so it takes both off the caller's way: one of its threads reads while another
parses what has arrived, and it answers for the names the catalog asks about (skb functions: how
often listed, module, addresses), over a pipe, until the caller ends it.

Only forked from a process with one thread (the CLI's start); elsewhere (the dashboard) kallsyms is
read ahead in a thread as before. The child ignores the terminal's signals (its parent ends it)
and leaves with os._exit: no atexit handler, no buffer of the parent's, runs twice.
"""
from __future__ import annotations

import marshal
import os
import signal
import struct
import threading

from .kallsyms import _ENTRY, CHUNK, Kallsyms

_LEN = struct.Struct("<I")


def usable() -> bool:
    """Forking is safe here: nothing but this thread runs (no lock can be held across the fork)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def read_parsed(path: str) -> Kallsyms:
    """kallsyms parsed as the kernel writes it: a thread reads, this one parses what arrived."""
    chunks: list = []
    ready = threading.Condition()

    def read() -> None:
        try:
            with open(path, errors="replace") as f:
                while True:
                    chunk = f.read(CHUNK)
                    with ready:
                        chunks.append(chunk)
                        ready.notify()
                    if not chunk:
                        return
        except OSError:
            with ready:
                chunks.append(None)
                ready.notify()

    threading.Thread(target=read, daemon=True).start()
    entries: list = []
    carry = ""
    while True:
        with ready:
            while not chunks:
                ready.wait()
            chunk = chunks.pop(0)
        if chunk is None:   # unreadable: what load() makes of it
            return Kallsyms("")
        if not chunk:
            break
        text = carry + chunk
        cut = text.rfind("\n") + 1
        entries.extend(_ENTRY.findall(text, 0, cut))
        carry = text[cut:]
    if carry:
        entries.extend(_ENTRY.findall(carry))
    return Kallsyms(entries=entries)


def _send(fd: int, obj) -> None:
    data = marshal.dumps(obj)
    data = _LEN.pack(len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def _recv(fd: int):
    """The next message, or None at the end of the pipe."""
    head = _read_exactly(fd, _LEN.size)
    if head is None:
        return None
    body = _read_exactly(fd, _LEN.unpack(head)[0])
    if body is None:
        return None
    return marshal.loads(body)


def _read_exactly(fd: int, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        part = os.read(fd, n - got)
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _answer(syms: Kallsyms, names) -> tuple:
    return (len(syms), syms.has_addresses,
            {n: (syms.addresses(n), syms.is_duplicate(n), syms.module(n), n in syms) for n in names})


class Child:
    """The forked reader of `path`; ask() answers for names. close() ends it (always call it)."""

    def __init__(self, path: str):
        to_child = os.pipe()
        from_child = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            for fd in (*to_child, *from_child):
                os.close(fd)
            raise
        if pid == 0:   # the child
            status = 1
            try:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_IGN)
                os.close(to_child[1])
                os.close(from_child[0])
                syms = read_parsed(path)
                syms.is_duplicate("")   # the name index, made before the parent asks
                while True:
                    names = _recv(to_child[0])
                    if names is None:
                        break
                    _send(from_child[1], _answer(syms, names))
                status = 0
            except BaseException:   # noqa: BLE001 (the parent reads kallsyms itself then)
                pass
            finally:
                os._exit(status)
        os.close(to_child[0])
        os.close(from_child[1])
        self.pid, self._to, self._from = pid, to_child[1], from_child[0]

    def ask(self, names: list[str]) -> tuple | None:
        """(number of text symbols, whether addresses are shown, {name: (addresses, listed twice,
        module, listed)}), or None when the child is gone or said something else."""
        if self.pid is None:
            return None
        try:
            _send(self._to, list(names))
            got = _recv(self._from)
        except (OSError, ValueError, EOFError, TypeError):
            got = None
        if not (isinstance(got, tuple) and len(got) == 3 and isinstance(got[2], dict)):
            self.close()
            return None
        return got

    def close(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        for fd in (self._to, self._from):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.kill(pid, signal.SIGKILL)   # it may still be parsing: nothing it does is needed now
        except OSError:
            pass
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass


class Asked:
    """What the kernel view's first read asks of kallsyms (how often a name is listed, its module,
    addresses, whether addresses are shown), answered by a Child. A batch of names is asked at
    once with ask(); any other name costs one more round; if the child fails, kallsyms is loaded
    here. Symbol tables and the like are not for this object: the view loads kallsyms for those."""

    def __init__(self, child: Child, path: str):
        self._child = child
        self._path = path
        self._known: dict = {}
        self._head: tuple | None = None
        self._full: Kallsyms | None = None

    def ask(self, names) -> None:
        if self._full is not None:
            return
        want = [n for n in dict.fromkeys(names) if n not in self._known]
        if not want and self._head is not None:
            return
        got = self._child.ask(want)
        if got is None:
            from .kallsyms import load
            self._full = load(self._path)
            return
        total, shown, answers = got
        self._head = (total, shown)
        self._known.update(answers)

    def _about(self, name: str):
        if self._full is None and name not in self._known:
            self.ask([name])
        if self._full is not None:
            return None
        return self._known.get(name)

    def __len__(self) -> int:
        if self._head is None:
            self.ask([])
        return len(self._full) if self._full is not None else self._head[0]

    @property
    def has_addresses(self) -> bool:
        if self._head is None:
            self.ask([])
        return self._full.has_addresses if self._full is not None else bool(self._head[1])

    def __contains__(self, name: str) -> bool:
        about = self._about(name)
        return name in self._full if self._full is not None else bool(about and about[3])

    def is_duplicate(self, name: str) -> bool:
        about = self._about(name)
        return self._full.is_duplicate(name) if self._full is not None else bool(about and about[1])

    def module(self, name: str) -> str | None:
        about = self._about(name)
        return self._full.module(name) if self._full is not None else (about[2] if about else None)

    def addresses(self, name: str) -> list[int]:
        about = self._about(name)
        return self._full.addresses(name) if self._full is not None else list(about[0] if about else [])

    def close(self) -> None:
        self._child.close()
