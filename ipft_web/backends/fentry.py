"""fentry backend: one BPF_PROG_TYPE_TRACING program per function, loaded with that function's BTF id.

The program text is the fentry_skb_N entry of the compiled image, with this process's map fds;
the verifier checks it once per target, and refuses some (too many arguments, struct arguments,
unsupported return types): those are counted, never fatal.
"""
from __future__ import annotations

import os

from ..kernel.sysbpf import BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY, BPFError, link_create_tracing, prog_load
from . import AttachResult, attach_each, close_many
from .kprobe import FREE_FUNC

MAX_POS = 6
LOAD_THREADS = int(os.environ.get("IPFT_FENTRY_THREADS", str(min(4, os.cpu_count() or 1))))


class FentryBackend:
    name = "fentry"
    kind = "fentry"

    def __init__(self, obj, btf_id_of):
        """`btf_id_of(name)` -> (btf type id, module BTF object fd or 0) or None."""
        self.obj = obj
        self.btf_id_of = btf_id_of
        self.fds: list[int] = []
        self.cancelled = lambda: False   # the tracer's stop asked for (checked between functions)

    def attach(self, functions, progress=None) -> AttachResult:
        result = AttachResult()
        insns = {}
        jobs = []
        for fn in functions:
            prog = "fentry_free" if fn.name == FREE_FUNC else f"fentry_skb_{fn.pos}"
            if fn.pos > MAX_POS:
                result.failed[fn.name] = f"skb is argument {fn.pos}; fentry entries go up to {MAX_POS}"
                continue
            target = self.btf_id_of(fn.name)
            if target is None:
                result.failed[fn.name] = ("module function: the fentry backend attaches to vmlinux only"
                                          if getattr(fn, "module", None) else "no BTF id for this function")
                continue
            if prog not in insns:
                insns[prog] = self.obj.insns(prog)
            jobs.append((fn.name, prog, target))

        def one(job):
            name, prog, target = job
            prog_fd = -1
            try:
                prog_fd = prog_load(BPF_PROG_TYPE_TRACING, insns[prog], expected_attach_type=BPF_TRACE_FENTRY,
                                    attach_btf_id=target[0], attach_btf_obj_fd=target[1], name=prog[:15])
                return name, (link_create_tracing(prog_fd, BPF_TRACE_FENTRY), prog_fd), None
            except BPFError as exc:
                if prog_fd >= 0:
                    os.close(prog_fd)
                return name, (), str(exc).splitlines()[0]

        # The verifier runs in the loading thread and each function has its own trampoline, so
        # loads proceed in parallel (the code patching itself is serialised by the kernel).
        attach_each(one, jobs, LOAD_THREADS, result, self.fds, progress, every=25, cancelled=self.cancelled)
        return result

    def detach(self) -> None:
        close_many(self.fds)
        self.fds.clear()
