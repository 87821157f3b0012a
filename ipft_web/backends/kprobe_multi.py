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

import errno
import time

from ..errors import EnvError
from ..kernel.kprobe_multi import attach_kprobe_multi
from ..kernel.sysbpf import BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI, BPFError, link_create_kprobe_multi_addrs
from . import AttachResult, close_many
from .kprobe import FREE_FUNC

# The cookie of each function in the link (bpf/ipft.bpf.c kprobe_multi_skb): skb argument position
# in the low byte, FREE for kfree_skbmem.
FREE = 0x100
PROGRAM = "kprobe_multi_skb"
# Errors of the link itself, whatever its functions: no kprobe-multi (CONFIG_FPROBE), not allowed
WHOLE_LINK_ERRORS = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.EACCES)


class KprobeMultiBackend:
    name = "kprobe-multi"
    kind = "kprobe-multi"

    def __init__(self, obj, addresses=None):
        """`addresses(name)` -> every kallsyms address of a function (empty when hidden)."""
        self.obj = obj
        self.addresses = addresses or (lambda name: [])
        self.links: list[int] = []
        self.timings: dict[str, float] = {}

    def _link(self, prog_fd: int, names: list, values: list, cookies: list, result: AttachResult) -> None:
        """One link for `values` (addresses, or names when addresses are hidden), item by item with
        `names` and `cookies`; a refused batch is split in halves down to the functions refused."""
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
            self._link(prog_fd, names[:half], values[:half], cookies[:half], result)
            self._link(prog_fd, names[half:], values[half:], cookies[half:], result)

    def attach(self, functions, progress=None) -> AttachResult:
        """One program (one verification), one link for every function."""
        result = AttachResult()
        cookie = {fn.name: fn.pos | (FREE if fn.name == FREE_FUNC else 0) for fn in functions}
        names = sorted(cookie)
        addrs = list(map(self.addresses, names))
        if names and all(addrs):
            if all(len(a) == 1 for a in addrs):   # the usual case: one address each
                item_names, values, cookies = names, [a[0] for a in addrs], [cookie[n] for n in names]
            else:
                item_names = [n for n, al in zip(names, addrs) for _a in al]
                values = [a for al in addrs for a in al]
                cookies = [cookie[n] for n in item_names]
        else:   # addresses hidden: by name, and a name kallsyms lists twice can't be told apart
            duplicate = {fn.name for fn in functions if getattr(fn, "duplicate", False)}
            item_names = []
            for n, al in zip(names, addrs):
                if len(al) > 1 or n in duplicate:
                    result.failed[n] = "name appears more than once in kallsyms, and addresses are hidden"
                else:
                    item_names.append(n)
            values, cookies = item_names, [cookie[n] for n in item_names]
        started = time.monotonic()
        prog_fd = self.obj.prog_fd(PROGRAM, BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI)
        self.timings["load"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        if values:
            self._link(prog_fd, item_names, values, cookies, result)
        self.timings["link"] = round(time.monotonic() - started, 3)
        if progress:
            progress("attaching", len(names), len(names))
        return result

    def detach(self) -> None:
        close_many(self.links)
        self.links.clear()

