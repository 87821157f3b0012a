"""kprobe-multi backend: one BPF link per skb argument position, attaching hundreds of functions at once.

A single untraceable or duplicated name fails a whole link (ESRCH), so a failing batch is split in
halves until the bad names are isolated: those are counted as refused, the rest attach.
"""
from __future__ import annotations

from ..kernel.sysbpf import BPF_TRACE_KPROBE_MULTI, BPFError
from ..kernel.kprobe_multi import attach_kprobe_multi
from ..program import load_func
from . import AttachResult, close_many
from .kprobe import FREE_FUNC


class KprobeMultiBackend:
    name = "kprobe-multi"
    kind = "kprobe-multi"

    def __init__(self, bpf):
        self.bpf = bpf
        self.links: list[int] = []

    def _link(self, prog_fd: int, names: list[str], result: AttachResult) -> None:
        try:
            self.links.append(attach_kprobe_multi(prog_fd, names))
            result.attached.extend(names)
        except (BPFError, ValueError) as exc:
            if len(names) == 1:
                result.failed[names[0]] = str(exc).splitlines()[0]
                return
            half = len(names) // 2
            self._link(prog_fd, names[:half], result)
            self._link(prog_fd, names[half:], result)

    def attach(self, functions, progress=None) -> AttachResult:
        from bcc import BPF

        result = AttachResult()
        groups: dict[str, list[str]] = {}
        for fn in functions:
            if getattr(fn, "duplicate", False):
                result.failed[fn.name] = "name appears more than once in kallsyms (kprobe-multi refuses it)"
                continue
            prog = "kprobe_free" if fn.name == FREE_FUNC else f"kprobe_skb_{fn.pos}"
            groups.setdefault(prog, []).append(fn.name)
        done = 0
        total = sum(len(v) for v in groups.values())
        for prog, names in groups.items():
            loaded = load_func(self.bpf, prog, BPF.KPROBE, attach_type=BPF_TRACE_KPROBE_MULTI)
            self._link(loaded.fd, sorted(set(names)), result)
            done += len(names)
            if progress:
                progress("attaching", done, total)
        return result

    def detach(self) -> None:
        close_many(self.links)
        self.links.clear()
