"""What the running kernel lets us do, asked for real (pwru-style feature probes).

Each probe loads a two-instruction program (`r0 = 0; exit`), attaches it the way a backend would
to a harmless, always-present function (`consume_skb`, else `kfree_skbmem`, `__kfree_skb`) or the
`kfree_skb` raw tracepoint, then closes everything. Answers are cached for the process. A probe
never raises: any failure is a "no" with the reason (errno name and what it likely means).

    have_btf() have_kprobe() have_kprobe_multi() have_fentry() have_raw_tracepoint()
    have_ringbuf() have_get_func_ip()           -> bool
    available_backends()                        -> e.g. ["kprobe", "tracepoint"] (best first)
    probe_all()                                 -> {"kprobe": {"ok": False, "why": "..."}, ...}
    is_root() bpf_usable() require_bpf()        -> the clear "need root / BPF" errors
"""
from __future__ import annotations

import functools
import os
import struct
import threading

from . import sysbpf

BACKENDS = ["kprobe-multi", "fentry", "kprobe", "tracepoint"]
PROBE_FUNCTIONS = ("consume_skb", "kfree_skbmem", "__kfree_skb")
PROBE_TRACEPOINTS = ("kfree_skb", "consume_skb")
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

_lock = threading.RLock()


class No(Exception):
    """A probe's "no", with the reason as its message."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, No):
        return str(exc)
    if isinstance(exc, sysbpf.BPFError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


def _probe(fn):
    """Cache a probe's (ok, why) per process and turn every exception into a "no"."""
    @functools.wraps(fn)
    def wrapper() -> tuple[bool, str | None]:
        with _lock:
            if not hasattr(wrapper, "result"):
                try:
                    fn()
                    wrapper.result = (True, None)
                except Exception as exc:  # never crash: a failure is an answer
                    wrapper.result = (False, _reason(exc))
            return wrapper.result

    def clear():
        if hasattr(wrapper, "result"):
            del wrapper.result
    wrapper.cache_clear = clear
    return wrapper


# -- root / bpf -------------------------------------------------------------------------------
def is_root() -> bool:
    return os.geteuid() == 0


@_probe
def _probe_bpf():
    if not is_root():
        raise No("needs root (run with sudo): loading tracing BPF programs needs CAP_BPF/CAP_SYS_ADMIN")
    try:
        sysbpf.close_all(sysbpf.prog_load(sysbpf.BPF_PROG_TYPE_RAW_TRACEPOINT))
    except sysbpf.BPFError as exc:
        raise No(f"BPF unusable: {exc.strerror}") from None


def bpf_usable() -> bool:
    return _probe_bpf()[0]


def bpf_unusable_reason() -> str | None:
    return _probe_bpf()[1]


def require_bpf() -> None:
    """Raise EnvError with one clear line when this process cannot load tracing BPF programs."""
    ok, why = _probe_bpf()
    if not ok:
        from ..errors import EnvError
        raise EnvError(why)


def _need_bpf():
    ok, why = _probe_bpf()
    if not ok:
        raise No(why)


# -- BTF ------------------------------------------------------------------------------------
def btf_func_ids(names, path: str = VMLINUX_BTF) -> dict[str, int]:
    """Type ids of FUNC entries with these names in a (base) BTF file; missing names are left out."""
    from .btf import read_btf

    btf = read_btf(path)
    return {name: ids[0] for name in names if (ids := btf.func_ids(name))}


@_probe
def _probe_btf():
    try:
        with open(VMLINUX_BTF, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise No(f"{VMLINUX_BTF} missing (kernel without CONFIG_DEBUG_INFO_BTF)") from None
    except OSError as exc:
        raise No(f"{VMLINUX_BTF} unreadable: {exc.strerror}") from None
    if len(head) < 2 or struct.unpack_from("<H", head)[0] != 0xEB9F:
        raise No(f"{VMLINUX_BTF} is not BTF")


# -- attach probes ------------------------------------------------------------------------------
_SYMBOL_ERRORS = {2, 3, 22}  # ENOENT, ESRCH, EINVAL: this function can't be probed, try the next


def _each_function(attach):
    """Call attach(symbol) for the probe functions until one works; re-raise the last error."""
    last = None
    for symbol in PROBE_FUNCTIONS:
        try:
            return attach(symbol)
        except sysbpf.BPFError as exc:
            last = exc
            if exc.errno not in _SYMBOL_ERRORS:
                break
    raise last


@_probe
def _probe_raw_tracepoint():
    _need_bpf()
    prog = sysbpf.prog_load(sysbpf.BPF_PROG_TYPE_RAW_TRACEPOINT)
    try:
        last = None
        for tp in PROBE_TRACEPOINTS:
            try:
                sysbpf.close_all(sysbpf.raw_tracepoint_open(prog, tp))
                return
            except sysbpf.BPFError as exc:
                last = exc
        raise last
    finally:
        sysbpf.close_all(prog)


@_probe
def _probe_kprobe():
    _need_bpf()
    if sysbpf.kprobe_pmu_type() is None:
        raise No("kprobe PMU missing (no /sys/bus/event_source/devices/kprobe: kernel without "
                 "CONFIG_KPROBES/CONFIG_KPROBE_EVENTS)")
    prog = sysbpf.prog_load(sysbpf.BPF_PROG_TYPE_KPROBE)

    def attach(symbol):
        event = sysbpf.perf_kprobe_open(symbol)
        try:
            sysbpf.perf_attach_bpf(event, prog)
        finally:
            sysbpf.close_all(event)
    try:
        _each_function(attach)
    finally:
        sysbpf.close_all(prog)


@_probe
def _probe_kprobe_multi():
    _need_bpf()
    prog = sysbpf.prog_load(sysbpf.BPF_PROG_TYPE_KPROBE, expected_attach_type=sysbpf.BPF_TRACE_KPROBE_MULTI)
    try:
        _each_function(lambda symbol: sysbpf.close_all(sysbpf.link_create_kprobe_multi(prog, [symbol])))
    finally:
        sysbpf.close_all(prog)


def attach_tracing(prog_fd: int, attach_type: int = sysbpf.BPF_TRACE_FENTRY) -> int:
    """Attach a loaded fentry/fexit program: BPF_LINK_CREATE (6.0+), else BPF_RAW_TRACEPOINT_OPEN."""
    try:
        return sysbpf.link_create_tracing(prog_fd, attach_type)
    except sysbpf.BPFError as exc:
        if exc.errno != 22:  # EINVAL: kernel without LINK_CREATE for tracing programs
            raise
        return sysbpf.raw_tracepoint_open(prog_fd, None)


@_probe
def _probe_fentry():
    _need_bpf()
    ok, why = _probe_btf()
    if not ok:
        raise No(f"needs BTF: {why}")
    ids = btf_func_ids(PROBE_FUNCTIONS)
    if not ids:
        raise No(f"none of {', '.join(PROBE_FUNCTIONS)} found in {VMLINUX_BTF}")

    def attach(symbol):
        if symbol not in ids:
            raise sysbpf.BPFError(2, f"{symbol}: no BTF FUNC")
        prog = sysbpf.prog_load(sysbpf.BPF_PROG_TYPE_TRACING, expected_attach_type=sysbpf.BPF_TRACE_FENTRY,
                                attach_btf_id=ids[symbol])
        try:
            sysbpf.close_all(attach_tracing(prog))
        finally:
            sysbpf.close_all(prog)
    _each_function(attach)


@_probe
def _probe_ringbuf():
    _need_bpf()
    sysbpf.close_all(sysbpf.map_create(sysbpf.BPF_MAP_TYPE_RINGBUF, 0, 0, os.sysconf("SC_PAGE_SIZE")))


@_probe
def _probe_get_func_ip():
    _need_bpf()
    insns = sysbpf.call(sysbpf.BPF_FUNC_get_func_ip) + sysbpf.RETURN_ZERO
    sysbpf.close_all(sysbpf.prog_load(sysbpf.BPF_PROG_TYPE_KPROBE, insns))


# -- public answers ------------------------------------------------------------------------------
def have_btf() -> bool:
    return _probe_btf()[0]


def have_raw_tracepoint() -> bool:
    return _probe_raw_tracepoint()[0]


def have_kprobe() -> bool:
    return _probe_kprobe()[0]


def have_kprobe_multi() -> bool:
    return _probe_kprobe_multi()[0]


def have_fentry() -> bool:
    return _probe_fentry()[0]


def have_ringbuf() -> bool:
    return _probe_ringbuf()[0]


def have_get_func_ip() -> bool:
    """bpf_get_func_ip() in kprobe programs (5.15+)."""
    return _probe_get_func_ip()[0]


# backend name -> probe
_BACKEND_PROBES = {
    "kprobe-multi": _probe_kprobe_multi,
    "fentry": _probe_fentry,
    "kprobe": _probe_kprobe,
    "tracepoint": _probe_raw_tracepoint,
}

_ALL = {
    "root": None,
    "bpf": _probe_bpf,
    "btf": _probe_btf,
    "raw_tracepoint": _probe_raw_tracepoint,
    "kprobe": _probe_kprobe,
    "kprobe_multi": _probe_kprobe_multi,
    "fentry": _probe_fentry,
    "ringbuf": _probe_ringbuf,
    "get_func_ip": _probe_get_func_ip,
    "tracepoint": _probe_raw_tracepoint,   # the tracepoint backend = raw tracepoints
}


def available_backends() -> list[str]:
    """Backends that work here, best first, out of BACKENDS."""
    return [name for name in BACKENDS if _BACKEND_PROBES[name]()[0]]


def backend_works(name: str) -> bool:
    """One backend's probe alone (each probe attaches something small, so ask only what is needed)."""
    probe = _BACKEND_PROBES.get(name)
    return bool(probe and probe()[0])


def probe_all() -> dict[str, dict]:
    """Every answer: {"kprobe": {"ok": False, "why": "kprobe PMU missing ..."}, ...}.

    Keys: root, bpf, btf, raw_tracepoint, kprobe, kprobe_multi, fentry, ringbuf, get_func_ip and
    tracepoint (same answer as raw_tracepoint, under the backend's name); "why" is None when ok.
    """
    out: dict[str, dict] = {}
    for key, probe in _ALL.items():
        if probe is None:
            ok = is_root()
            out[key] = {"ok": ok, "why": None if ok else "not running as root"}
            continue
        try:
            ok, why = probe()
        except Exception as exc:  # belt and braces: probes already catch everything
            ok, why = False, _reason(exc)
        out[key] = {"ok": ok, "why": why}
    return out


def clear_cache() -> None:
    """Forget every answer (tests; a process that changed privileges)."""
    for probe in set(p for p in _ALL.values() if p is not None):
        probe.cache_clear()
