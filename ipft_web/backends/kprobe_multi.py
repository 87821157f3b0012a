"""kprobe-multi backend: one BPF link per skb argument position, every function attached at once.

Each position (1-5, and kfree_skbmem) has its program, the kprobe backend's own (kprobe_skb_N,
kprobe_free) loaded for kprobe-multi, which reads its register directly: an unmarked hit costs one
probe read (of skb->mark). One program for every position, with the position in each function's
link cookie, cost 3.5 times as much per hit (bpf_get_attach_cookie() is a binary search of the
link's addresses, and the register was copied out with a probe read): 718 against 206 ns per run
for ipftrace2's programs, measured with kernel.bpf_stats_enabled in a 6.12 guest.

A link is made from addresses (kallsyms), which spares the kernel a pass over every symbol name
and lets names kallsyms lists twice (two static functions of one name) be traced at both
addresses; names are the fallback when addresses are hidden (kptr_restrict).

A single untraceable address or name fails a whole link, so a failing batch is split in halves
until the bad ones are isolated: those are counted as refused, the rest attach.
"""
from __future__ import annotations

import errno
import time

from ..errors import EnvError
from ..kernel.kprobe_multi import attach_kprobe_multi
from ..kernel.sysbpf import BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI, BPFError, link_create_kprobe_multi_addrs
from . import AttachResult, close_many, parallel_map
from .kprobe import program_for, programs

# Errors of the link itself, whatever its functions: no kprobe-multi (CONFIG_FPROBE), not allowed
WHOLE_LINK_ERRORS = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.EACCES)
PROGRAMS = programs()   # what a session may load (backends.preload verifies them ahead)


class KprobeMultiBackend:
    name = "kprobe-multi"
    kind = "kprobe-multi"

    def __init__(self, obj, addresses=None):
        """`addresses(name)` -> every kallsyms address of a function (empty when hidden)."""
        self.obj = obj
        self.addresses = addresses or (lambda name: [])
        self.links: list[int] = []
        self.timings: dict[str, float] = {}

    def _link(self, prog_fd: int, names: list, values: list, result: AttachResult) -> None:
        """One link for `values` (addresses, or names when addresses are hidden), item by item with
        `names`; a refused batch is split in halves down to the functions refused."""
        try:
            if isinstance(values[0], str):
                self.links.append(attach_kprobe_multi(prog_fd, values))
            else:
                self.links.append(link_create_kprobe_multi_addrs(prog_fd, values))
            result.attached.extend(dict.fromkeys(names))   # a name at two addresses: once
        except (BPFError, ValueError) as exc:
            if getattr(exc, "errno", None) in WHOLE_LINK_ERRORS:   # no function would do: don't bisect
                raise EnvError(f"the kernel refused the kprobe-multi link: {exc}") from None
            if len(values) == 1:
                result.failed[names[0]] = str(exc).splitlines()[0]
                return
            half = len(values) // 2
            self._link(prog_fd, names[:half], values[:half], result)
            self._link(prog_fd, names[half:], values[half:], result)

    def _targets(self, functions, result: AttachResult) -> tuple[list, list]:
        """(item names, link values): every address of each function, or names when addresses are
        hidden (a name kallsyms lists twice is then refused: it can't be told apart)."""
        names = sorted({fn.name for fn in functions})
        addrs = list(map(self.addresses, names))
        if names and all(addrs):
            if all(len(a) == 1 for a in addrs):   # the usual case: one address each
                return names, [a[0] for a in addrs]
            return [n for n, al in zip(names, addrs) for _a in al], [a for al in addrs for a in al]
        duplicate = {fn.name for fn in functions if getattr(fn, "duplicate", False)}
        items = []
        for n, al in zip(names, addrs):
            if len(al) > 1 or n in duplicate:
                result.failed[n] = "name appears more than once in kallsyms, and addresses are hidden"
            else:
                items.append(n)
        return items, items

    def attach(self, functions, progress=None) -> AttachResult:
        """One program and one link per skb position; the programs are verified in parallel."""
        result = AttachResult()
        groups: dict[str, list] = {}
        for fn in functions:
            groups.setdefault(program_for(fn), []).append(fn)
        order = sorted(groups)
        started = time.monotonic()
        fds = parallel_map(lambda prog: self.obj.prog_fd(prog, BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI),
                           order, len(order))
        self.timings["load"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        for prog, prog_fd in zip(order, fds):
            items, values = self._targets(groups[prog], result)
            if values:
                self._link(prog_fd, items, values, result)
        self.timings["link"] = round(time.monotonic() - started, 3)
        result.attached.sort()
        if progress:
            n = len({fn.name for fn in functions})
            progress("attaching", n, n)
        return result

    def detach(self) -> None:
        """Each close waits for the kernel to unregister the link's functions; closing the six links
        in parallel measured the same as one after another (0.75-0.95 s in a 6.12 guest)."""
        close_many(self.links)
        self.links.clear()
