"""kprobe-multi backend: every function attached at once, in four BPF links.

A link is one ftrace update to make and one to undo (each close waits for the kernel), whatever
its size, so links are few; but a program that takes the skb's position from the link cookie pays
a binary search of the link's addresses at every hit. So:
  - positions 2 and 3: the kprobe backend's programs (kprobe_skb_2, _3), one link each;
  - position 1 and kfree_skbmem: one link (kprobe_multi_skb_1), kfree_skbmem told apart by its
    address (ipft_free_addr), compared only for hits of followed packets;
  - positions 4 and 5: one link (kprobe_multi_skb_45), the position in the cookie: their few
    functions hardly run (13 of 970,000 hits in a TCP run over loopback, 6.12 guest).
Every program reads its register directly: an unmarked hit costs one probe read (of skb->mark).
One link per position (six) measured 0.26 s to make and 0.93 s to close in a 6.12 guest; one program
with the position in the cookie for all cost 718 against 206 ns per hit (kernel.bpf_stats_enabled).

A link is made from addresses (kallsyms), which spares the kernel a pass over every symbol name
and lets names kallsyms lists twice (two static functions of one name) be traced at both
addresses; names are the fallback when addresses are hidden (kptr_restrict), and kfree_skbmem then
has a link of its own (kprobe_free): its address is not known to compare.

A single untraceable address or name fails a whole link, so a failing batch is split in halves
until the bad ones are isolated: those are counted as refused, the rest attach.
"""
from __future__ import annotations

import errno
import struct
import time

from ..errors import EnvError
from ..kernel.kprobe_multi import attach_kprobe_multi
from ..kernel.sysbpf import BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI, BPFError, link_create_kprobe_multi_addrs
from ..program import ZERO_KEY
from . import AttachResult, close_many, parallel_map
from .kprobe import FREE_FUNC

# Errors of the link itself, whatever its functions: no kprobe-multi (CONFIG_FPROBE), not allowed
WHOLE_LINK_ERRORS = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.EACCES)
# The link of each skb argument position (1-5), the position going in the cookie where it is shared
LINK_OF = {1: "kprobe_multi_skb_1", 2: "kprobe_skb_2", 3: "kprobe_skb_3",
           4: "kprobe_multi_skb_45", 5: "kprobe_multi_skb_45"}
COOKIES = {"kprobe_multi_skb_45"}       # programs that read the position from the cookie
PROGRAMS = sorted(set(LINK_OF.values()))   # what a session loads (backends.preload verifies them ahead)


class KprobeMultiBackend:
    name = "kprobe-multi"
    kind = "kprobe-multi"

    def __init__(self, obj, addresses=None):
        """`addresses(name)` -> every kallsyms address of a function (empty when hidden)."""
        self.obj = obj
        self.addresses = addresses or (lambda name: [])
        self.links: list[int] = []
        self.timings: dict[str, float] = {}

    def _link(self, prog_fd: int, names: list, values: list, cookies: list | None, result: AttachResult) -> None:
        """One link for `values` (addresses, or names when addresses are hidden), item by item with
        `names` (and `cookies`); a refused batch is split in halves down to the functions refused."""
        try:
            if isinstance(values[0], str):
                self.links.append(attach_kprobe_multi(prog_fd, values, cookies))
            else:
                self.links.append(link_create_kprobe_multi_addrs(prog_fd, values, cookies))
            result.attached.extend(dict.fromkeys(names))   # a name at two addresses: once
        except (BPFError, ValueError) as exc:
            if getattr(exc, "errno", None) in WHOLE_LINK_ERRORS:   # no function would do: don't bisect
                raise EnvError(f"the kernel refused the kprobe-multi link: {exc}") from None
            if len(values) == 1:
                result.failed[names[0]] = str(exc).splitlines()[0]
                return
            half = len(values) // 2
            halves = (cookies[:half], cookies[half:]) if cookies is not None else (None, None)
            self._link(prog_fd, names[:half], values[:half], halves[0], result)
            self._link(prog_fd, names[half:], values[half:], halves[1], result)

    def _targets(self, functions, result: AttachResult) -> tuple[list, list, list]:
        """(item names, link values, item positions): every address of each function, or names
        when addresses are hidden (a name kallsyms lists twice is then refused: it can't be told
        apart)."""
        pos = {fn.name: fn.pos for fn in functions}
        names = sorted(pos)
        addrs = list(map(self.addresses, names))
        if names and all(addrs):
            if all(len(a) == 1 for a in addrs):   # the usual case: one address each
                return names, [a[0] for a in addrs], [pos[n] for n in names]
            items = [n for n, al in zip(names, addrs) for _a in al]
            return items, [a for al in addrs for a in al], [pos[n] for n in items]
        duplicate = {fn.name for fn in functions if getattr(fn, "duplicate", False)}
        items = []
        for n, al in zip(names, addrs):
            if len(al) > 1 or n in duplicate:
                result.failed[n] = "name appears more than once in kallsyms, and addresses are hidden"
            else:
                items.append(n)
        return items, items, [pos[n] for n in items]

    def plan(self, functions) -> tuple[dict[str, list], int]:
        """({program: its functions}, kfree_skbmem's address when it goes in position 1's link, else 0)."""
        groups: dict[str, list] = {}
        free_addr = 0
        for fn in functions:
            prog = LINK_OF[fn.pos]
            if fn.name == FREE_FUNC:
                addrs = self.addresses(fn.name)
                if len(addrs) == 1:
                    free_addr = addrs[0]
                    prog = LINK_OF[1]
                else:   # hidden (or twice): nothing to compare a hit's address with
                    prog = "kprobe_free"
            groups.setdefault(prog, []).append(fn)
        return groups, free_addr

    def attach(self, functions, progress=None) -> AttachResult:
        """One link per program of plan(); the programs are verified in parallel (ahead, in the
        dashboard: backends.preload)."""
        result = AttachResult()
        groups, free_addr = self.plan(functions)
        order = sorted(groups)
        started = time.monotonic()
        fds = parallel_map(lambda prog: self.obj.prog_fd(prog, BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI),
                           order, len(order))
        if LINK_OF[1] in groups:   # before its link: the first hits are told apart already
            self.obj.map("ipft_free_addr").update(ZERO_KEY, struct.pack("<Q", free_addr))
        self.timings["load"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        for prog, prog_fd in zip(order, fds):
            items, values, positions = self._targets(groups[prog], result)
            if values:
                self._link(prog_fd, items, values, positions if prog in COOKIES else None, result)
        self.timings["link"] = round(time.monotonic() - started, 3)
        result.attached.sort()
        if progress:
            n = len({fn.name for fn in functions})
            progress("attaching", n, n)
        return result

    def detach(self) -> None:
        """Each close waits for the kernel to unregister the link's functions; closing the links in
        parallel measured the same as one after another (0.75-0.95 s for six in a 6.12 guest)."""
        close_many(self.links)
        self.links.clear()
