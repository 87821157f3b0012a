"""One object with everything the tracer needs to know about the running kernel.

Type info (BTF, or DWARF from --vmlinux), the skb function catalog, raw tracepoints with an skb,
symbol addresses, drop reason names and which backends work. Loaded once per process and shared
by the CLI, the tracer and the web server (the web server keeps it for the process lifetime).

With BTF, what the tracer asks of the view is also kept for the rest of the boot
(ipft_web/kernel/snapshot.py): a later process starts from that and reads type info only when a
field script asks for it.
"""
from __future__ import annotations

import atexit
import re
import threading
import time

from .. import cachefiles
from ..errors import EnvError
from ..logs import get_logger
from ..program import Tracepoint
from . import snapshot as snapshot_mod

log = get_logger(__name__)

_cache: dict = {}

# The tracing machinery's own functions take an skb too (the tracepoint stubs and their
# perf/BPF glue); probing them only doubles what the tracepoints already say.
INFRA = re.compile(r"^(__bpf_trace_|perf_trace_|trace_event_raw_event_|__traceiter_|__probestub_|"
                   r"trace_raw_output_|__trace_)")
EXTRA = ("kfree_skbmem",)   # traced whatever their arguments (the end of every skb)
_lock = threading.Lock()


def read_snapshot(typedb, syms, catalog, key: str = "") -> snapshot_mod.Snapshot:
    """What the tracer asks of the kernel, read from type info, kallsyms and the catalog."""
    from ..program import offsets as program_offsets
    from .typedb import short_enum_name

    functions = sorted((f for f in catalog.traceable_skb_functions() if not INFRA.match(f.name)),
                       key=lambda f: f.name)
    names = {f.name for f in functions}
    extra = {}
    for name in EXTRA:
        if name not in names:
            entry = catalog.entry(name)
            if entry is not None:
                extra[name] = entry
    try:
        offsets, offsets_error = program_offsets(typedb), None
    except EnvError as exc:
        offsets, offsets_error = None, str(exc)
    try:
        enum = typedb.enum("skb_drop_reason")
    except KeyError:
        enum = {}
    vmlinux = getattr(typedb, "vmlinux", None)   # BTF only: DWARF has no type ids for fentry
    btf_ids, addresses = {}, {}
    found = catalog.type_ids   # met while the catalog looked for skb functions
    for f in [*functions, *extra.values()]:
        if vmlinux is not None and not f.module:
            tid = found.get((f.name, None))
            if tid is None:   # not an skb function (EXTRA): index vmlinux's function names
                ids = vmlinux.func_ids(f.name)
                tid = ids[0] if ids else None
            if tid:
                btf_ids[f.name] = tid
        addrs = syms.addresses(f.name)
        if addrs:
            addresses[f.name] = addrs
    tps = [Tracepoint(name=t.name, group=t.group, arg=t.arg) for t in catalog.skb_tracepoints()]
    return snapshot_mod.Snapshot(
        functions=functions, extra=extra, catalog_source=catalog.source, tracepoints=tps,
        kfree_skb_args=catalog.kfree_skb_args(), offsets=offsets, offsets_error=offsets_error,
        reasons={v: short_enum_name(k) for k, v in enum.items()}, btf_ids=btf_ids, addresses=addresses,
        has_addresses=bool(getattr(syms, "has_addresses", False)), symbols=None, key=key)


class KernelView:
    def __init__(self, snap: snapshot_mod.Snapshot, typedb=None, syms=None, features=None):
        """`typedb`, `syms`: the type info and kallsyms the snapshot came from; read again on first
        use when the snapshot was stored (None)."""
        self.snap = snap
        self._typedb = typedb
        self._syms = syms
        self._features = features
        self._by_name = {f.name: f for f in snap.functions}
        self.tracepoints = snap.tracepoints
        self.kfree_skb_args = snap.kfree_skb_args
        self.stored = typedb is None   # loaded from a snapshot (this boot's, or the kernel's)
        self.load_seconds = 0.0
        self._lazy = threading.Lock()
        self._unsaved = False          # read from the kernel, not yet stored for the boot
        self._store_base = None        # the cache directory when it was read
        self._build_key = None         # read from type info: also stored for later boots under this
        self._derived = None           # how a later boot's addresses were derived ("text bases", "ftrace")
        self._part_key = None          # ... and the key of the build part they came from
        self._saver = None
        self._store_lock = threading.Lock()

    @classmethod
    def cached(cls, vmlinux: str | None = None) -> "KernelView | None":
        """The view if this process has loaded it already (never blocks on loading it)."""
        with _lock:
            return _cache.get(vmlinux)

    @classmethod
    def load(cls, vmlinux: str | None = None) -> "KernelView":
        """Cached per process (per --vmlinux); with BTF, from this boot's snapshot when there is one."""
        with _lock:
            view = _cache.get(vmlinux)
            if view is None:
                started = time.monotonic()
                # (no key without a cache: nothing would be looked up or stored)
                digest = None if vmlinux or cachefiles.directory() is None else snapshot_mod.key()
                snap = snapshot_mod.load(digest)
                if snap is not None:
                    log.info("kernel view loaded from this boot's cache (%s)", digest[:12])
                    view = cls(snap)
                else:
                    build = snapshot_mod.build_key() if digest else None
                    view = cls._from_build(digest, build) or cls._read(vmlinux, digest, build)
                view.load_seconds = time.monotonic() - started
                _cache[vmlinux] = view
            return view

    @classmethod
    def _from_build(cls, digest: str | None, build: str | None) -> "KernelView | None":
        """This kernel's view from an earlier boot, with this boot's addresses; None if not stored."""
        part = snapshot_mod.load(build, snapshot_mod.BUILD_SUBDIR)
        if part is None:
            return None
        from . import kallsyms
        # kallsyms is read later (when a symbol is asked for, or the view stored) unless needed here
        snap = None
        if part.relative:
            bases = kallsyms.read_text_bases(snapshot_mod.relative_objects(part))
            snap = snapshot_mod.with_relative_addresses(part, bases, digest)
            how = "text bases"
        if snap is None:
            snap = snapshot_mod.with_ftrace_addresses(part, kallsyms.read_ftrace_addresses(), digest)
            how = "ftrace"
        if snap is not None:
            log.info("kernel view loaded from this kernel's cache (%s), addresses from %s", build[:12], how)
            view = cls(snap)
            view._derived, view._part_key = how, build
        else:
            syms = kallsyms.load()
            log.info("kernel view loaded from this kernel's cache (%s), addresses from kallsyms", build[:12])
            view = cls(snapshot_mod.with_addresses(part, syms, digest), syms=syms)
        view._store_later()
        return view

    @classmethod
    def _read(cls, vmlinux: str | None, digest: str | None, build: str | None = None) -> "KernelView":
        """Read the kernel (and store what was read under `digest` and `build`, when there are)."""
        from . import catalog as catalog_mod
        from . import kallsyms
        kallsyms.prefetch_kernel_lists()   # the kernel writes them while type info is parsed here
        try:
            if vmlinux:
                from .dwarf import load_dwarf
                typedb = load_dwarf(vmlinux)
            else:
                from .btf import load_kernel_btf
                typedb = load_kernel_btf(modules=True)
            syms = kallsyms.load_for_catalog()
            catalog = catalog_mod.Catalog(typedb, syms)
            snap = read_snapshot(typedb, syms, catalog, digest or "")
        finally:
            kallsyms.forget_prefetched()
        # answers of a forked reader (kallsyms_fork) serve the read only: symbolizing and storing
        # load kallsyms here when they first need it (once tracing)
        view = cls(snap, typedb, syms if isinstance(syms, kallsyms.Kallsyms) else None)
        if digest:
            view._build_key = build
            view._store_later()
        return view

    def _store_later(self) -> None:
        """Stored once tracing has started (store_soon), or at the latest when the process exits:
        sorting every symbol and writing them is not on the way to the first event."""
        self._store_base = cachefiles.directory()
        if self._store_base is not None:
            self._unsaved = True
            atexit.register(self.store)

    def store(self) -> None:
        """Store this view for later processes of the boot, if it was read and not stored yet."""
        with self._store_lock:
            if not self._unsaved:
                return
            self._unsaved = False
            try:
                if self._derived:
                    self._check_derived()
                if self.snap.symbols is None:
                    self.snap.symbols = self.syms.symbol_table()
                from . import kallsyms
                if self.snap.relative is None and self._build_key:
                    placed = self.syms.placed_of(self.snap.addresses)
                    bases = kallsyms.read_text_bases({obj for rows in placed.values() for _a, obj in rows})
                    self.snap.relative = snapshot_mod.relative_addresses(placed, bases)
                if self.snap.entry_offsets is None and self._build_key:
                    self.snap.entry_offsets = snapshot_mod.entry_offsets(self.snap.addresses,
                                                                         kallsyms.read_ftrace_addresses())
                snapshot_mod.save(self.snap, self._store_base)
                if self._build_key:
                    snapshot_mod.save(snapshot_mod.build_part(self.snap, self._build_key), self._store_base,
                                      snapshot_mod.BUILD_SUBDIR)
            except Exception as exc:   # a cache that cannot be written costs the next start, nothing else
                log.warning("could not store the kernel view: %s", exc)

    def _check_derived(self) -> None:
        """The addresses a later boot derived (text bases, ftrace) against kallsyms, now read: on
        any difference, kallsyms' are kept for this boot and the build's stored part is dropped
        (the next boot reads the kernel)."""
        real = self.syms.addresses_of(self.snap.addresses)
        wrong = sorted(n for n, addrs in self.snap.addresses.items() if sorted(real.get(n, [])) != sorted(addrs))
        if not wrong:
            return
        log.warning("%d function addresses taken from %s differ from kallsyms (%s): hits on them may have been "
                    "named wrongly in this trace; this kernel's stored view is dropped", len(wrong), self._derived,
                    ", ".join(wrong[:3]))
        self.snap.addresses = real
        snapshot_mod.remove(self._part_key, self._store_base, snapshot_mod.BUILD_SUBDIR)

    def store_soon(self) -> None:
        """store() in a thread (the process waits for it at exit)."""
        if self._unsaved and self._saver is None:
            self._saver = threading.Thread(target=self.store, name="ipft-store-kernel-view")
            self._saver.start()

    # -- what a stored view reads again on demand ----------------------------------------------
    @property
    def typedb(self):
        """Type info (BTF of vmlinux and modules, or DWARF); a stored view reads it on first use."""
        if self._typedb is None:
            with self._lazy:
                if self._typedb is None:
                    from .btf import load_kernel_btf
                    self._typedb = load_kernel_btf(modules=True)
        return self._typedb

    @property
    def syms(self):
        if self._syms is None:
            with self._lazy:
                if self._syms is None:
                    from . import kallsyms
                    self._syms = kallsyms.load()
        return self._syms

    # -- functions -----------------------------------------------------------------------
    def skb_functions(self):
        """Traceable functions with a struct sk_buff * argument, sorted by name."""
        return self.snap.functions

    def function(self, name: str):
        """Catalog entry for a traceable function (any signature for kfree_skbmem), or None."""
        return self._by_name.get(name) or self.snap.extra.get(name)

    @property
    def catalog_source(self) -> str:
        return self.snap.catalog_source

    def addresses(self, name: str) -> list[int]:
        found = self.snap.addresses.get(name)
        if found is not None:
            return list(found)
        if not self.snap.has_addresses or self.function(name) is not None:
            return []
        return self.syms.addresses(name)

    def symbol(self, addr: int) -> str | None:
        table = self.snap.symbols
        if isinstance(table, snapshot_mod.StoredSymbols):   # read on first use (two threads: both read)
            table = self.snap.symbols = table.load() or self.syms.symbol_table()
        elif table is None:   # read from the kernel in this process: kallsyms sorts on first use
            table = self.syms.symbol_table()
        return table.symbolize(addr)

    def offsets(self) -> dict[str, int]:
        """Byte offsets of the fields the BPF program reads (program.FIELDS); EnvError if missing."""
        if self.snap.offsets is None:
            raise EnvError(self.snap.offsets_error or "kernel type info lacks fields the program reads")
        return dict(self.snap.offsets)

    def btf_target(self, name: str):
        """(BTF type id of the function, BTF object fd) for fentry; None for module functions."""
        entry = self.function(name)
        if entry is None or entry.module:
            return None
        found = self.snap.btf_ids.get(name)
        return (found, 0) if found else None

    # -- drop reasons --------------------------------------------------------------------
    def drop_reason(self, value: int) -> str:
        if self.kfree_skb_args.get("reason") is None:
            return "NOT_SPECIFIED"  # kernels before 5.17 give no reason
        return self.snap.reasons.get(value, f"REASON_{value}")

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
