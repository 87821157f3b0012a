"""One object with everything the tracer needs to know about the running kernel.

Type info (BTF, or DWARF from --vmlinux), the skb function catalog, raw tracepoints with an skb,
symbol addresses, drop reason names and which backends work. Loaded once per process and shared
by the CLI, the tracer and the web server (the web server keeps it for the process lifetime).
"""
from __future__ import annotations

import re
import threading
import time

from ..program import Tracepoint
from .typedb import short_enum_name

_cache: dict = {}

# The tracing machinery's own functions take an skb too (the tracepoint stubs and their
# perf/BPF glue); probing them only doubles what the tracepoints already say.
INFRA = re.compile(r"^(__bpf_trace_|perf_trace_|trace_event_raw_event_|__traceiter_|__probestub_|"
                   r"trace_raw_output_|__trace_)")
_lock = threading.Lock()


class KernelView:
    def __init__(self, typedb, syms, catalog, features=None):
        self.typedb = typedb
        self.syms = syms
        self.catalog = catalog
        self._features = features
        self._functions = None
        self._by_name = None
        tps = catalog.skb_tracepoints()
        self.tracepoints = [Tracepoint(name=t.name, group=t.group, arg=t.arg) for t in tps]
        self.kfree_skb_args = catalog.kfree_skb_args()
        self._reasons = None

    @classmethod
    def cached(cls, vmlinux: str | None = None) -> "KernelView | None":
        """The view if this process has loaded it already (never blocks on loading it)."""
        with _lock:
            return _cache.get(vmlinux)

    @classmethod
    def load(cls, vmlinux: str | None = None) -> "KernelView":
        """Cached per process (per --vmlinux)."""
        with _lock:
            view = _cache.get(vmlinux)
            if view is None:
                started = time.monotonic()
                from . import catalog as catalog_mod
                from . import kallsyms
                if vmlinux:
                    from .dwarf import load_dwarf
                    typedb = load_dwarf(vmlinux)
                else:
                    from .btf import load_kernel_btf
                    typedb = load_kernel_btf(modules=True)
                syms = kallsyms.load()
                view = cls(typedb, syms, catalog_mod.Catalog(typedb, syms))
                view.load_seconds = time.monotonic() - started
                _cache[vmlinux] = view
            return view

    # -- functions -----------------------------------------------------------------------
    def skb_functions(self):
        """Traceable functions with a struct sk_buff * argument, sorted by name."""
        if self._functions is None:
            self._functions = sorted((f for f in self.catalog.traceable_skb_functions() if not INFRA.match(f.name)),
                                     key=lambda f: f.name)
            self._by_name = {f.name: f for f in self._functions}
        return self._functions

    def function(self, name: str):
        """Catalog entry for a traceable function (any signature for kfree_skbmem), or None."""
        self.skb_functions()
        entry = self._by_name.get(name)
        if entry is None and name == "kfree_skbmem":
            entry = self.catalog.entry(name)
        return entry

    @property
    def catalog_source(self) -> str:
        return self.catalog.source

    def addresses(self, name: str) -> list[int]:
        return self.syms.addresses(name)

    def symbol(self, addr: int) -> str | None:
        return self.syms.symbolize(addr)

    def btf_target(self, name: str):
        """(BTF type id of the function, BTF object fd) for fentry; None for module functions."""
        entry = self.function(name)
        if entry is None or entry.module:
            return None
        vmlinux = getattr(self.typedb, "vmlinux", None)  # BTF only: DWARF has no type ids for fentry
        ids = vmlinux.func_ids(name) if vmlinux is not None else []
        return (ids[0], 0) if ids else None

    # -- drop reasons --------------------------------------------------------------------
    def drop_reason(self, value: int) -> str:
        if self._reasons is None:
            try:
                enum = self.typedb.enum("skb_drop_reason")
            except KeyError:
                enum = {}
            self._reasons = {v: short_enum_name(k) for k, v in enum.items()}
        if self.kfree_skb_args.get("reason") is None:
            return "NOT_SPECIFIED"  # kernels before 5.17 give no reason
        return self._reasons.get(value, f"REASON_{value}")

    # -- backends ------------------------------------------------------------------------
    def features(self) -> dict:
        if self._features is None:
            from . import features
            self._features = features.probe_all()
        return self._features

    def backends(self) -> list[str]:
        from . import features
        return features.available_backends()

    def backend_works(self, backend: str) -> bool:
        from . import features
        return features.backend_works(backend)

    def why_not(self, backend: str) -> str:
        info = self.features().get(backend.replace("-", "_"), {}) or self.features().get(backend, {})
        return info.get("why") or "not supported"
