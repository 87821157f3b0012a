"""kprobe-multi backend: one program and one BPF link for every function, attached at once.

The program finds the skb argument through the function's cookie (its position), so the kernel
verifies one program, not one per position. The link is made from addresses (kallsyms), which
spares the kernel a pass over every symbol name and lets names kallsyms lists twice (two static
functions of one name) be traced at both addresses; names are the fallback when addresses are
hidden (kptr_restrict).

A single untraceable address or name fails a whole link, so a failing batch is split in halves
until the bad ones are isolated: those are counted as refused, the rest attach.
"""
from __future__ import annotations

import time

from ..kernel.kprobe_multi import attach_kprobe_multi
from ..kernel.sysbpf import BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI, BPFError, link_create_kprobe_multi_addrs
from . import AttachResult, close_many
from .kprobe import FREE_FUNC

# The cookie of each function in the link (bpf/ipft.bpf.c kprobe_multi_skb): skb argument position
# in the low byte, FREE for kfree_skbmem.
FREE = 0x100


class KprobeMultiBackend:
    name = "kprobe-multi"
    kind = "kprobe-multi"

    def __init__(self, obj, addresses=None):
        """`addresses(name)` -> every kallsyms address of a function (empty when hidden)."""
        self.obj = obj
        self.addresses = addresses or (lambda name: [])
        self.links: list[int] = []
        self.timings: dict[str, float] = {}

    def _link(self, prog_fd: int, items: list, result: AttachResult) -> None:
        """`items`: [(name, address or None, cookie)], all with addresses or none."""
        try:
            cookies = [c for _n, _a, c in items]
            if items[0][1] is None:
                self.links.append(attach_kprobe_multi(prog_fd, [n for n, _a, _c in items], cookies))
            else:
                self.links.append(link_create_kprobe_multi_addrs(prog_fd, [a for _n, a, _c in items], cookies))
            result.attached.extend(dict.fromkeys(n for n, _a, _c in items))
        except (BPFError, ValueError) as exc:
            if len(items) == 1:
                result.failed[items[0][0]] = str(exc).splitlines()[0]
                return
            half = len(items) // 2
            self._link(prog_fd, items[:half], result)
            self._link(prog_fd, items[half:], result)

    def attach(self, functions, progress=None) -> AttachResult:
        """One program (one verification), one link for every function."""
        result = AttachResult()
        cookie: dict[str, int] = {}
        duplicate: dict[str, bool] = {}
        for fn in functions:
            cookie[fn.name] = fn.pos | (FREE if fn.name == FREE_FUNC else 0)
            duplicate[fn.name] = bool(getattr(fn, "duplicate", False))
        names = sorted(cookie)
        addrs = {n: self.addresses(n) for n in names}
        by_addr = bool(names) and all(addrs.values())
        items = []
        for n in names:
            if by_addr:
                items.extend((n, a, cookie[n]) for a in addrs[n])
            elif len(addrs[n]) > 1 or duplicate[n]:
                result.failed[n] = "name appears more than once in kallsyms, and addresses are hidden"
            else:
                items.append((n, None, cookie[n]))
        started = time.monotonic()
        prog_fd = self.obj.prog_fd("kprobe_multi_skb", BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI)
        self.timings["load"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        if items:
            self._link(prog_fd, items, result)
        self.timings["link"] = round(time.monotonic() - started, 3)
        if progress:
            progress("attaching", len(names), len(names))
        return result

    def detach(self) -> None:
        close_many(self.links)
        self.links.clear()

