"""The tracer: kernel introspection -> BPF program -> backend -> events -> journeys.

Implements the Tracer interface of docs/design.md for the CLI and the web server alike.
`start()` blocks (compile + attach); `poll(0)` never blocks; `stop()` is idempotent and undoes
everything the tracer did to the kernel.
"""
from __future__ import annotations

import bisect
import os
import threading
import time

from . import program
from .config import TraceConfig
from .errors import Cancelled, EnvError, UsageError
from .events import (KIND_CONSUME, KIND_DROP, KIND_FREE, KIND_KPROBE, decode_from, ifname_of,
                     tuple_of)
from .journeys import Assembler, Hit
from .kernel.view import KernelView
from .logs import get_logger

log = get_logger(__name__)

NOT_A_DROP = {"NOT_DROPPED_YET", "CONSUMED"}

# What `-b auto` picks, best first. fentry comes after kprobe: it loads (and verifies) one program
# per function, which in a 6.1 guest took far longer than attaching the same functions as kprobes.
AUTO_ORDER = ("kprobe-multi", "kprobe", "fentry", "tracepoint")
# Asked for by name (-b), attached without probing first: the attach is one link, it works or fails
# as a whole, so it is its own probe (the probe's link on one function costs a tenth of a second
# under emulation). A failure is then explained by the probe.
UNPROBED = ("kprobe-multi",)

# poll(): events are taken in chunks until none are left or the time budget is spent
POLL_CHUNK = 2048
POLL_BUDGET_S = 0.05


class Symbolizer:
    """Function address -> name for the functions we attached (nearest lower address).

    `pairs` is (address, name) pairs or a function returning them; the table is made at the first
    lookup (after tracing started, not on the way to it)."""

    def __init__(self, pairs):
        self._pairs = pairs
        self.addrs: list[int] = []
        self.names: list[str] = []
        self.cache: dict[int, str] = {}

    def _build(self) -> None:
        pairs = sorted(self._pairs() if callable(self._pairs) else self._pairs)
        self._pairs = None
        self.addrs = [a for a, _ in pairs]
        self.names = [n for _, n in pairs]

    def __call__(self, addr: int) -> str | None:
        name = self.cache.get(addr)
        if name is None:
            if self._pairs is not None:
                self._build()
            i = bisect.bisect_right(self.addrs, addr) - 1
            # kprobes may report the address a few bytes in (IBT endbr, ftrace); allow 64
            if i >= 0 and addr - self.addrs[i] < 64:
                name = self.names[i]
            else:
                return None
            self.cache[addr] = name
        return name


def require_root() -> None:
    """One clear line, before any work, when this process cannot trace: not root, or root that the
    kernel still refuses BPF (an unprivileged container, a lockdown, seccomp)."""
    if os.geteuid() != 0:
        raise EnvError("tracing needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN): run it with sudo")
    from .kernel import features
    features.require_bpf()


def precompile(vmlinux: str | None = None) -> float:
    """Load the kernel view and compile the program ahead of the first session; returns seconds."""
    started = time.monotonic()
    view = KernelView.load(vmlinux=vmlinux)
    prog = program.compiled(view, vmlinux)
    view.store()
    # and the rest of what Start would do before attaching, so that it pays for the links only:
    # the backends' code (each import costs tens of milliseconds under emulation), the probe of
    # the backend -b auto picks, and that backend's programs through the verifier
    from .backends import fentry, kprobe, kprobe_multi, preload, tracepoint  # noqa: F401
    from .fields import decode  # noqa: F401
    try:
        require_root()   # its probe is kept for the process
    except EnvError:
        return time.monotonic() - started
    for backend in AUTO_ORDER:
        if view.backend_works(backend):
            preload(backend, prog.obj, prog.spec)
            break
    return time.monotonic() - started


def resolve_fields(config: TraceConfig, kernel: KernelView):
    """The config's field paths resolved against this kernel's types (UsageError naming valid
    members); None without fields (then neither type info nor the field modules are loaded)."""
    specs = getattr(config, "field_specs", [])
    if not specs:
        return None
    from .fields import resolve_all
    from .fields.decode import FieldSet
    return FieldSet(kernel.typedb, resolve_all(kernel.typedb, specs))



def _unusable(backend: str, kernel) -> EnvError:
    return EnvError(f"backend {backend} does not work on this kernel ({kernel.why_not(backend)}); try -b auto")

class Tracer:
    def __init__(self, config: TraceConfig, on_journey, on_progress=None, kernel: KernelView | None = None,
                 store_view: bool = True):
        """`store_view`: once tracing, store the kernel view in a thread if it was read (False: the
        caller does, with tracer.kernel.store_soon(), when its own start-up is done)."""
        self.config = config
        self.store_view = store_view
        self.on_journey = on_journey
        self.on_progress = on_progress or (lambda stage, done, total: None)
        self.kernel = kernel
        self.obj = None
        self.program = None
        self.lost_base = 0
        self.backend = None
        self.tp_backend = None
        self._tp_result = None   # the tracepoint attach: AttachResult, or what it raised
        self.spec = None
        self._cancel = threading.Event()
        self.state = "idle"
        self.attached: list[str] = []
        self.failed: dict[str, str] = {}
        self.header_note: str | None = None
        self.fallbacks: list[str] = []   # -b auto: backends that failed as a whole, and why
        self.backend_name = None
        self.events = 0
        self.errors = 0
        self.lost = 0
        self.journeys = 0
        self.started_at = None
        self._stopped = False
        self.timings: dict[str, float] = {}
        self._lock = threading.Lock()
        self.assembler = None
        self.symbolize = None
        self.fieldset = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Compile (once per process) and attach; on any failure undo what was done, then raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def cancel(self) -> None:
        """Ask a start running in another thread to stop: it does at its next step (after the
        kernel view, after the compile, between functions while attaching), undoes what it did and
        raises Cancelled. Tracing already started is ended by stop()."""
        self._cancel.set()

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("stopped before tracing started")

    def _start(self) -> None:
        require_root()
        t0 = time.monotonic()
        self.state = "preparing"
        self.on_progress("loading kernel types", 0, 0)
        kernel = self.kernel or KernelView.load(vmlinux=self.config.vmlinux)
        self.kernel = kernel
        plans = self._plans(kernel)
        self.fieldset = self._resolve_fields(kernel)   # a bad path fails here, before anything is loaded

        self.timings["kernel"] = round(time.monotonic() - t0, 3)
        self._check_cancel()
        program.raise_limits(max(len(functions) + len(slots) for _, functions, slots in plans))
        self.state = "compiling"
        self.on_progress("compiling", 0, 0)
        t1 = time.monotonic()
        prog = program.compiled(kernel, self.config.vmlinux, with_fields=bool(self.fieldset))
        if prog.in_use:
            raise EnvError("another trace is running in this process; stop it first")
        prog.in_use = True
        self.program = prog
        self.obj, self.spec, self.header_note = prog.obj, prog.spec, prog.header_note
        self.timings["compile"] = round(time.monotonic() - t1, 3)
        self._check_cancel()
        t1 = time.monotonic()
        self.lost_base = program.lost_events(self.obj)
        program.set_filter(prog, self.config.mark, self.config.mask)
        if self.fieldset:   # a program without fields has no field code (its maps stay unread)
            from .fields import bpfmap
            bpfmap.load(self.obj, self.fieldset.fields)
        prog.sink = self._on_event

        self.state = "attaching"
        for i, (backend, functions, slots) in enumerate(plans):
            if i and not kernel.backend_works(backend):   # -b auto, a later candidate: probe it now
                if i == len(plans) - 1:
                    raise EnvError(f"no backend attached; {backend} does not work here ({kernel.why_not(backend)})")
                continue
            try:
                self._attach(kernel, backend, functions, slots)
                break
            except Cancelled:
                raise
            except EnvError as exc:
                if i == len(plans) - 1:
                    if backend in UNPROBED and backend == self.config.backend and not kernel.backend_works(backend):
                        raise _unusable(backend, kernel) from None
                    raise
                self._detach()   # -b auto: this backend failed as a whole; the next one may not
                self.fallbacks.append(f"{backend}: {exc}")
                log.warning("backend %s failed (%s); trying %s", backend, exc, plans[i + 1][0])
        self.timings["attach"] = round(time.monotonic() - t1, 3)
        self.timings["start"] = round(time.monotonic() - t0, 3)
        self.state = "tracing"
        self.started_at = time.time()
        if self.store_view:
            kernel.store_soon()   # the first process of a boot stores its kernel view now, off the way here

    def _plans(self, kernel) -> list:
        """[(backend, kprobe catalog entries, tracepoint slots)] to try in order: the chosen backend,
        or with -b auto every usable one, best first, for which the regex selects something."""
        candidates = self._candidates(kernel)
        plans = []
        for backend in candidates:
            functions, slots = self._targets(kernel, backend)
            chosen = [f.name for f in functions] + [n for s in slots
                                                    for n in (kernel.tracepoints[s].label, kernel.tracepoints[s].name)]
            if any(self.config.matches(name) for name in chosen):
                plans.append((backend, functions, slots))
        if not plans:
            where = f"the {candidates[0]} backend" if len(candidates) == 1 else f"any backend ({', '.join(candidates)})"
            raise UsageError(f"no function matches {self.config.regex!r} for {where}")
        return plans

    def _attach(self, kernel, backend: str, functions, tp_slots) -> None:
        """Attach one backend (and the skb lifecycle tracepoints); EnvError when the kernel refuses it."""
        free_traced = any(f.name == "kfree_skbmem" for f in functions)
        self.assembler = Assembler(self._emit, idle_timeout=self.config.idle_timeout, free_traced=free_traced)
        from .backends.tracepoint import TracepointBackend
        self.tp_backend = TracepointBackend(self.obj, self.spec)
        self.backend_name = backend
        if backend != "tracepoint":
            from .backends import make
            self.backend = make(backend, self.obj, kernel)
            if hasattr(self.backend, "cancelled"):
                self.backend.cancelled = self._cancel.is_set
            # the lifecycle tracepoints attach in a thread meanwhile: the function backend's time
            # is mostly the kernel's (a kprobe-multi link is one system call), the GIL is free
            tp = threading.Thread(target=self._attach_tracepoints, args=(tp_slots, None), daemon=True,
                                  name="ipft-attach-tp")
            tp.start()
            try:
                res = self.backend.attach(functions, self.on_progress)
            finally:
                tp.join()
            self._check_cancel()
            for step, seconds in getattr(self.backend, "timings", {}).items():
                self.timings[f"attach_{step}"] = seconds
            wanted = [f.name for f in functions if self.config.matches(f.name)] if res.failed else []
            if wanted and not set(wanted) & set(res.attached):
                first = next(((n, res.failed[n]) for n in wanted if n in res.failed), ("?", "refused"))
                raise EnvError(f"the kernel refused all {len(wanted)} functions for the {backend} backend "
                               f"({first[0]}: {first[1]}); try another -b")
            attached = list(res.attached)
            self.symbolize = Symbolizer(lambda: [(a, n) for n in attached for a in kernel.addresses(n)])
            self.attached.extend(res.attached)
            self.failed.update(res.failed)
        else:
            self.backend = self.tp_backend
            self._attach_tracepoints(tp_slots, self.on_progress)
        if isinstance(self._tp_result, BaseException):
            raise self._tp_result
        self._check_cancel()
        self.attached.extend(self._tp_result.attached)
        self.failed.update(self._tp_result.failed)
        if not self.attached:
            raise EnvError(f"the kernel refused every probe ({len(self.failed)} tried); run with -v to see why")

    def _attach_tracepoints(self, slots, progress) -> None:
        started = time.monotonic()
        try:
            self._tp_result = self.tp_backend.attach(slots, progress)
        except Exception as exc:   # not a refusal (those are counted): raised by the attaching thread
            self._tp_result = exc
        self.timings["attach_tp"] = round(time.monotonic() - started, 3)

    def _detach_probes(self) -> None:
        for b in (self.backend, self.tp_backend):
            if b is not None:
                b.detach()

    def _detach(self) -> None:
        """Undo one backend's attach entirely, as if it had never been tried (the fallback path)."""
        self._detach_probes()
        self.backend = self.tp_backend = self.symbolize = None
        self.attached.clear()
        self.failed.clear()

    def _resolve_fields(self, kernel):
        return resolve_fields(self.config, kernel)

    def _candidates(self, kernel) -> list[str]:
        from .backends import IMPLEMENTED
        want = self.config.backend
        if want == "auto":
            # Probed in order, and only until one works: each probe attaches something (a fentry
            # trampoline costs seconds under emulation), and the first that works is the one used.
            # Those after it stay candidates for the fallback; they are probed if it comes to that.
            usable = []
            for b in AUTO_ORDER:
                if b in IMPLEMENTED and kernel.backend_works(b):
                    usable = [x for x in AUTO_ORDER[AUTO_ORDER.index(b):] if x in IMPLEMENTED]
                    break
            if not usable:
                raise EnvError("this kernel allows neither kprobes nor raw tracepoints for BPF")
            return usable
        if want not in IMPLEMENTED:
            raise UsageError(f"backend {want} is not available yet; use one of {', '.join(IMPLEMENTED)}")
        if want not in UNPROBED and not kernel.backend_works(want):   # only the one asked for
            raise _unusable(want, kernel)
        return [want]

    def _targets(self, kernel, backend):
        """(kprobe catalog entries, tracepoint slot ids) the config selects."""
        cfg = self.config
        functions = []
        if backend != "tracepoint":
            max_pos = 6 if backend == "fentry" else 5
            functions = [f for f in kernel.skb_functions() if f.pos <= max_pos and cfg.matches(f.name)]
            names = {f.name for f in functions}
            free = kernel.function("kfree_skbmem")
            if free is not None and "kfree_skbmem" not in names:
                functions.append(free)
            slots = [s for s, tp in enumerate(kernel.tracepoints) if tp.name in ("kfree_skb", "consume_skb")]
        else:
            slots = [s for s, tp in enumerate(kernel.tracepoints)
                     if tp.name in ("kfree_skb", "consume_skb") or cfg.matches(tp.label) or cfg.matches(tp.name)]
        return functions, slots

    def poll(self, timeout_ms: int = 0) -> None:
        """Take what the kernel sent (waiting up to `timeout_ms` for it) and emit finished journeys.

        Bounded: at most POLL_BUDGET_S of decoding per call, so a flood the consumer cannot keep up
        with still lets the caller see Ctrl-C, --duration or the web loop's other work."""
        if self.state != "tracing":
            return
        if timeout_ms:
            self.program.reader.wait(timeout_ms)
        with self._lock:
            if self.state != "tracing":
                return
            deadline = time.monotonic() + POLL_BUDGET_S
            drained = False
            while not drained and time.monotonic() < deadline:
                drained = self.program.drain(POLL_CHUNK) < POLL_CHUNK
            # Idle journeys are judged by the clock only once we have caught up; while events are
            # still waiting in the ring, by the newest event taken (a consumer running behind must
            # not time out journeys whose next hits it has not read yet).
            self.assembler.tick(None if drained else self.assembler.latest_ts)
            self.lost = program.lost_events(self.obj) - self.lost_base

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                t0 = time.monotonic()
                self._detach_probes()
                self.timings["detach"] = round(time.monotonic() - t0, 3)
                if self.program is not None:
                    self.program.release()  # drains the ring buffer into this tracer first
                    self.lost = program.lost_events(self.obj) - self.lost_base
                if self.assembler is not None:
                    self.assembler.flush("exit")
            finally:
                self.state = "stopped"

    def stats(self) -> dict:
        return {
            "state": self.state,
            "backend": self.backend_name,
            "fallbacks": list(self.fallbacks),
            "attached": len(self.attached),
            "failed": len(self.failed),
            "failed_funcs": dict(sorted(self.failed.items())),
            "events": self.events,
            "lost": self.lost,
            "errors": self.errors,
            "journeys": self.journeys,
            "headers": self.header_note,
            "program": None if self.program is None else self.program.source,
            "timings": dict(self.timings),
            "fields": self.fieldset.info() if self.fieldset else [],
        }

    # -- events --------------------------------------------------------------------------
    def _emit(self, journey: dict) -> None:
        self.journeys += 1
        self.on_journey(journey)

    def _on_event(self, buf, offset, size) -> None:
        self.events += 1
        try:
            self.assembler.feed(self._hit(decode_from(buf, offset, size)))
        except Exception as exc:  # never let one odd event kill the loop; count it, say it once
            self.errors += 1
            if self.errors == 1:
                log.warning("could not decode an event (counted in 'errors'): %s: %s", type(exc).__name__, exc)
            log.debug("event decoding failed", exc_info=True)

    def _hit(self, ev) -> Hit:
        end = None
        drop_reason = drop_func = None
        if ev.kind == KIND_KPROBE or ev.kind == KIND_FREE:
            func = self.symbolize(ev.addr) if self.symbolize else None
            if func is None:
                func = self.kernel.symbol(ev.addr) or f"0x{ev.addr:x}"
            kind = self.backend.kind if self.backend else "kprobe"
            if ev.kind == KIND_FREE:
                end = "free"
        else:
            tp = self.spec.slots.get(ev.addr)
            func = tp.label if tp else f"tracepoint#{ev.addr}"
            kind = "tracepoint"
            if ev.kind in (KIND_DROP, KIND_CONSUME):
                end = "freeing"
            if ev.kind == KIND_DROP:
                reason = self.kernel.drop_reason(ev.reason)
                if reason not in NOT_A_DROP:
                    drop_reason = reason
                    drop_func = self.kernel.symbol(ev.location) if ev.location else None
        return Hit(skb=ev.skb, ts=ev.ts, func=func, kind=kind, cpu=ev.cpu, len=ev.len, mark=ev.mark,
                   ifindex=ev.ifindex, dev=ifname_of(ev), netns=ev.netns, tuple=tuple_of(ev), end=end,
                   ip_id=ev.ip_id if ev.family == 4 else None,
                   drop_reason=drop_reason, drop_func=drop_func,
                   fields=self.fieldset.decode(ev.fields) if self.fieldset else None)
