"""Raw tracepoint backend: every tracepoint whose prototype carries a struct sk_buff *.

The only backend a kernel without kprobes (or a locked-down one) leaves us. skb:kfree_skb and
skb:consume_skb have programs of their own (drop reason, end of a journey).

Each tracepoint slot is its own program (a raw tracepoint program cannot tell which tracepoint
fired), so they are loaded by a small pool: the verifier runs in the loading thread.
"""
from __future__ import annotations

import os

from ..errors import EnvError
from ..kernel.sysbpf import BPF_PROG_TYPE_RAW_TRACEPOINT, BPFError, raw_tracepoint_open
from ..program import MAX_TP_SLOTS
from . import AttachResult, close_many, parallel_map

LOAD_THREADS = max(1, min(4, os.cpu_count() or 1))


class TracepointBackend:
    name = "tracepoint"
    kind = "tracepoint"

    def __init__(self, obj, spec):
        self.obj = obj
        self.spec = spec
        self.fds: list[int] = []

    def program_for(self, slot: int) -> str:
        if slot == self.spec.kfree_skb_slot:
            return "tp_kfree_skb"
        if slot == self.spec.consume_skb_slot:
            return "tp_consume_skb"
        return f"tp_slot_{int(slot)}"

    def attach(self, slots, progress=None) -> AttachResult:
        """`slots`: slot ids of spec.slots to attach."""
        result = AttachResult()
        total = len(slots)

        def load(slot):
            if self.program_for(slot).startswith("tp_slot_") and slot >= MAX_TP_SLOTS:
                return None, f"more skb tracepoints than the BPF program has slots ({MAX_TP_SLOTS})"
            try:
                return self.obj.prog_fd(self.program_for(slot), BPF_PROG_TYPE_RAW_TRACEPOINT), None
            except EnvError as exc:
                return None, str(exc)

        if len(slots) < 4:   # kfree_skb and consume_skb beside a function backend: no pool to start
            loaded = [load(slot) for slot in slots]
        else:
            loaded = parallel_map(load, slots, LOAD_THREADS)
        for i, (slot, (prog_fd, err)) in enumerate(zip(slots, loaded), 1):
            tp = self.spec.slots[slot]
            if prog_fd is None:
                result.failed[tp.label] = err
            else:
                try:
                    self.fds.append(raw_tracepoint_open(prog_fd, tp.name))
                    result.attached.append(tp.label)
                except BPFError as exc:
                    result.failed[tp.label] = str(exc).splitlines()[0]
            if progress:
                progress("attaching", i, total)
        return result

    def detach(self) -> None:
        close_many(self.fds)
        self.fds.clear()
