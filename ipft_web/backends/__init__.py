"""Ways of attaching the one BPF program to the kernel.

Each backend takes the loaded program (bpfobject.BPFObject) and a list of targets, attaches what it can,
and counts (never hides) what the kernel refused. `detach()` undoes everything it did.
"""
from __future__ import annotations

import os
import threading

from ..records import field, record

IMPLEMENTED = ("kprobe-multi", "fentry", "kprobe", "tracepoint")


@record
class AttachResult:
    attached: list = field(default_factory=list)          # names
    failed: dict = field(default_factory=dict)            # name -> reason


def parallel_map(fn, items, threads: int) -> list:
    """[fn(x) for x in items], run by up to `threads` threads while this one waits (concurrent.futures
    without its imports: six modules at every start). The first exception is raised once every
    thread has finished its item; a Ctrl-C in the waiting thread lets them finish theirs, no more."""
    items = list(items)
    n = min(max(1, threads), len(items))
    if n <= 1:
        return [fn(x) for x in items]
    results = [None] * len(items)
    errors: list = []
    todo = iter(range(len(items)))
    lock = threading.Lock()
    stop = threading.Event()

    def work():
        while not stop.is_set():
            with lock:
                i = next(todo, None)
            if i is None:
                return
            try:
                results[i] = fn(items[i])
            except BaseException as exc:  # noqa: B036  (raised again in the waiting thread)
                errors.append(exc)
                stop.set()

    workers = [threading.Thread(target=work, name="ipft-parallel", daemon=True) for _ in range(n)]
    for t in workers:
        t.start()
    try:
        for t in workers:
            t.join()
    finally:
        stop.set()
        for t in workers:
            t.join()
    if errors:
        raise errors[0]
    return results


def attach_each(one, items, threads: int, result: AttachResult, fds: list, progress=None, every: int = 1,
                cancelled=None) -> None:
    """Run `one(item) -> (name, fds, error or None)` over a pool of `threads` (results in item
    order); what attached goes to `fds` and result.attached, the rest to result.failed.

    Items go to the pool a few per thread at a time, so that a stop (`cancelled()` true, or
    Ctrl-C in the waiting thread) leaves at most those few to finish, not the whole list."""
    items = list(items)
    total = len(items)
    step = 4 * max(1, threads)
    done = 0
    for lo in range(0, total, step):
        if cancelled is not None and cancelled():
            return
        for name, got, err in parallel_map(one, items[lo:lo + step], threads):
            done += 1
            if err is None:
                fds.extend(got)
                result.attached.append(name)
            else:
                result.failed[name] = err
            if progress and (done % every == 0 or done == total):
                progress("attaching", done, total)


DETACH_THREADS = int(os.environ.get("IPFT_DETACH_THREADS", "64"))


def close_many(fds, threads: int = DETACH_THREADS) -> None:
    """Close perf-event/link fds in parallel (each close may wait for an RCU grace period)."""
    def close(fd):
        try:
            os.close(fd)
        except OSError:
            pass
    fds = list(fds)
    if len(fds) < 8:
        for fd in fds:
            close(fd)
        return
    parallel_map(close, fds, threads)


def make(name: str, obj, kernel):
    """The backend object for `name` (one of IMPLEMENTED) over a loaded program (bpfobject.BPFObject)."""
    if name == "kprobe":
        from .kprobe import KprobeBackend
        return KprobeBackend(obj, kernel.addresses)
    if name == "kprobe-multi":
        from .kprobe_multi import KprobeMultiBackend
        return KprobeMultiBackend(obj, kernel.addresses)
    if name == "fentry":
        from .fentry import FentryBackend
        return FentryBackend(obj, kernel.btf_target)
    raise ValueError(f"no function backend {name!r}")


def preload(name: str, obj, spec) -> None:
    """Verify, ahead of a session, the programs backend `name` loads whatever the functions: Start
    then pays for the links only. fentry loads one program per function, so nothing here."""
    from ..errors import EnvError
    from ..kernel import sysbpf
    from . import kprobe, kprobe_multi
    from .tracepoint import TracepointBackend
    progs = [(TracepointBackend(obj, spec).program_for(s), sysbpf.BPF_PROG_TYPE_RAW_TRACEPOINT, 0)
             for s in (spec.kfree_skb_slot, spec.consume_skb_slot) if s is not None]
    if name == "kprobe-multi":
        progs += [(p, sysbpf.BPF_PROG_TYPE_KPROBE, sysbpf.BPF_TRACE_KPROBE_MULTI) for p in kprobe_multi.PROGRAMS]
    elif name == "kprobe":
        progs += [(p, sysbpf.BPF_PROG_TYPE_KPROBE, 0) for p in kprobe.programs()]
    for prog, prog_type, attach_type in progs:
        try:
            obj.prog_fd(prog, prog_type, attach_type)
        except EnvError:
            pass   # refused: the session says so when it needs it
