"""Raw tracepoint backend: every tracepoint whose prototype carries a struct sk_buff *.

The only backend a kernel without kprobes (or a locked-down one) leaves us. skb:kfree_skb and
skb:consume_skb have programs of their own (drop reason, end of a journey).
"""
from __future__ import annotations

from . import AttachResult, close_fds, quiet_stderr


class TracepointBackend:
    name = "tracepoint"
    kind = "tracepoint"

    def __init__(self, bpf, spec):
        self.bpf = bpf
        self.spec = spec

    def program_for(self, slot: int) -> str:
        if slot == self.spec.kfree_skb_slot:
            return "tp_kfree_skb"
        if slot == self.spec.consume_skb_slot:
            return "tp_consume_skb"
        return f"tp_slot_{int(slot)}"

    def attach(self, slots, progress=None) -> AttachResult:
        """`slots`: slot ids of spec.slots to attach."""
        result = AttachResult()
        noise: list = []
        total = len(slots)
        with quiet_stderr(noise):
            for i, slot in enumerate(slots, 1):
                tp = self.spec.slots[slot]
                try:
                    self.bpf.attach_raw_tracepoint(tp=tp.name, fn_name=self.program_for(slot))
                    result.attached.append(tp.label)
                except Exception as exc:
                    result.failed[tp.label] = str(exc).strip().splitlines()[0] if str(exc).strip() else "refused"
                if progress:
                    progress("attaching", i, total)
        return result

    def detach(self) -> None:
        close_fds(self.bpf.raw_tracepoint_fds)
