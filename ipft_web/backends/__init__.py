"""Ways of attaching the one BPF program to the kernel.

Each backend takes the compiled bcc.BPF object and a list of targets, attaches what it can,
and counts (never hides) what the kernel refused. `detach()` undoes everything it did.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

IMPLEMENTED = ("kprobe-multi", "fentry", "kprobe", "tracepoint")


@dataclass
class AttachResult:
    attached: list = field(default_factory=list)          # names
    failed: dict = field(default_factory=dict)            # name -> reason


@contextlib.contextmanager
def quiet_stderr(sink: list):
    """libbcc prints one line per refused probe on fd 2; collect them instead of flooding the terminal."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.extend(line for line in tmp.read().decode(errors="replace").splitlines() if line.strip())


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
    with ThreadPoolExecutor(max_workers=min(threads, len(fds))) as pool:
        list(pool.map(close, fds))


def close_fds(fd_table: dict) -> None:
    """Detach by closing the perf-event / raw-tracepoint fds BCC keeps, then forget them.

    Closing the fd is what detaches; BCC's own detach also tries to delete tracefs probe
    entries that perf-PMU probes never created, which is slow on thousands of probes.
    """
    fds = [one for fd in fd_table.values() for one in (fd.values() if isinstance(fd, dict) else [fd])]
    fd_table.clear()
    close_many(fds)


def make(name: str, bpf, kernel):
    """The backend object for `name` (one of IMPLEMENTED) over a compiled program."""
    if name == "kprobe":
        from .kprobe import KprobeBackend
        return KprobeBackend(bpf)
    if name == "kprobe-multi":
        from .kprobe_multi import KprobeMultiBackend
        return KprobeMultiBackend(bpf)
    if name == "fentry":
        from .fentry import FentryBackend
        return FentryBackend(bpf, kernel.btf_target)
    raise ValueError(f"no function backend {name!r}")
