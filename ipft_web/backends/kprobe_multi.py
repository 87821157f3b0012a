"""kprobe-multi backend: one program and one BPF link for every function, attached at once.

The program finds the skb argument through the function's cookie (its position), so the kernel
verifies one program, not one per position.

A single untraceable or duplicated name fails a whole link (ESRCH), so a failing batch is split in
halves until the bad names are isolated: those are counted as refused, the rest attach.
"""
from __future__ import annotations

import time

from ..kernel.sysbpf import BPF_TRACE_KPROBE_MULTI, BPFError
from ..kernel.kprobe_multi import attach_kprobe_multi
from ..program import load_func
from . import AttachResult, close_many
from .kprobe import FREE_FUNC


# The cookie of each function in the link (bpf/ipft.bpf.c kprobe_multi_skb): skb argument position
# in the low byte, FREE for kfree_skbmem.
FREE = 0x100


class KprobeMultiBackend:
    name = "kprobe-multi"
    kind = "kprobe-multi"

    def __init__(self, bpf):
        self.bpf = bpf
        self.links: list[int] = []
        self.timings: dict[str, float] = {}

    def _link(self, prog_fd: int, names: list[str], cookies: list[int], result: AttachResult) -> None:
        try:
            self.links.append(attach_kprobe_multi(prog_fd, names, cookies))
            result.attached.extend(names)
        except (BPFError, ValueError) as exc:
            if len(names) == 1:
                result.failed[names[0]] = str(exc).splitlines()[0]
                return
            half = len(names) // 2
            self._link(prog_fd, names[:half], cookies[:half], result)
            self._link(prog_fd, names[half:], cookies[half:], result)

    def attach(self, functions, progress=None) -> AttachResult:
        """One program (one verification), one link for every function."""
        from bcc import BPF

        result = AttachResult()
        cookie: dict[str, int] = {}
        for fn in functions:
            if getattr(fn, "duplicate", False):
                result.failed[fn.name] = "name appears more than once in kallsyms (kprobe-multi refuses it)"
                continue
            cookie[fn.name] = fn.pos | (FREE if fn.name == FREE_FUNC else 0)
        names = sorted(cookie)
        started = time.monotonic()
        loaded = load_func(self.bpf, "kprobe_multi_skb", BPF.KPROBE, attach_type=BPF_TRACE_KPROBE_MULTI)
        self.timings["load"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        if names:
            self._link(loaded.fd, names, [cookie[n] for n in names], result)
        self.timings["link"] = round(time.monotonic() - started, 3)
        if progress:
            progress("attaching", len(names), len(names))
        return result

    def detach(self) -> None:
        close_many(self.links)
        self.links.clear()
