"""kprobe backend: one perf-event kprobe per function, program chosen by the skb's argument position."""
from __future__ import annotations

from . import AttachResult, close_fds, quiet_stderr

MAX_POS = 5  # x86-64 passes the first six arguments in registers; BCC's PT_REGS_PARM reaches five
FREE_FUNC = "kfree_skbmem"


class KprobeBackend:
    name = "kprobe"
    kind = "kprobe"

    def __init__(self, bpf):
        self.bpf = bpf

    def attach(self, functions, progress=None) -> AttachResult:
        """`functions`: catalog entries with .name and .pos (1-based)."""
        result = AttachResult()
        total = len(functions)
        noise: list = []
        with quiet_stderr(noise):
            for i, fn in enumerate(functions, 1):
                prog = "kprobe_free" if fn.name == FREE_FUNC else f"kprobe_skb_{fn.pos}"
                try:
                    self.bpf.attach_kprobe(event=fn.name, fn_name=prog)
                    result.attached.append(fn.name)
                except Exception as exc:  # BCC raises bare Exception
                    result.failed[fn.name] = str(exc).strip().splitlines()[0] if str(exc).strip() else "refused"
                if progress and (i % 50 == 0 or i == total):
                    progress("attaching", i, total)
        return result

    def detach(self) -> None:
        close_fds(self.bpf.kprobe_fds)
