"""kprobe backend: one perf-event kprobe per function, program chosen by the skb's argument position.

Attach and detach go through the kprobe PMU directly (ipft_web.kernel.sysbpf). Attaching is
serialised by the kernel (ftrace code patching under one lock): threads only add contention there
(measured in a 6.1 guest: 8 threads were slower than one). Detaching also waits for RCU grace
periods, which many closing threads share, so fds are closed from a pool.

A name kallsyms lists twice (two static functions called alike) gets a kprobe at each address.
"""
from __future__ import annotations

import os

from ..kernel.sysbpf import (BPF_PROG_TYPE_KPROBE, BPFError, perf_attach_bpf, perf_kprobe_open,
                             perf_kprobe_open_addr)
from . import AttachResult, attach_each, close_many

MAX_POS = 5  # PT_REGS_PARM1..5 on x86-64
FREE_FUNC = "kfree_skbmem"
ATTACH_THREADS = int(os.environ.get("IPFT_ATTACH_THREADS", "1"))


def program_for(fn) -> str:
    return "kprobe_free" if fn.name == FREE_FUNC else f"kprobe_skb_{fn.pos}"


def programs() -> list[str]:
    """Every program program_for() can name (backends.preload loads them ahead)."""
    return ["kprobe_free"] + [f"kprobe_skb_{pos}" for pos in range(1, MAX_POS + 1)]


class KprobeBackend:
    name = "kprobe"
    kind = "kprobe"

    def __init__(self, obj, addresses=None):
        self.obj = obj
        self.addresses = addresses or (lambda name: [])
        self.fds: list[int] = []
        self.cancelled = lambda: False   # the tracer's stop asked for (checked between functions)

    def attach(self, functions, progress=None) -> AttachResult:
        """`functions`: catalog entries with .name and .pos (1-based)."""
        result = AttachResult()
        prog_fds = {}
        for fn in functions:
            prog = program_for(fn)
            if prog not in prog_fds:
                prog_fds[prog] = self.obj.prog_fd(prog, BPF_PROG_TYPE_KPROBE)

        def one(fn):
            fds = []
            try:
                addrs = self.addresses(fn.name) if getattr(fn, "duplicate", False) else []
                for addr in addrs or [None]:
                    fd = perf_kprobe_open(fn.name) if addr is None else perf_kprobe_open_addr(addr, fn.name)
                    fds.append(fd)
                    perf_attach_bpf(fd, prog_fds[program_for(fn)])
                return fn.name, fds, None
            except BPFError as exc:
                close_many(fds)
                return fn.name, [], str(exc).splitlines()[0]

        attach_each(one, functions, ATTACH_THREADS, result, self.fds, progress, every=50,
                    cancelled=self.cancelled)
        return result

    def detach(self) -> None:
        close_many(self.fds)
        self.fds.clear()
