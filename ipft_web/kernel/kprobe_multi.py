"""Attach one BPF program to many functions with a single kprobe-multi link (5.18+, CONFIG_FPROBE).

The program must be loaded with expected_attach_type BPF_TRACE_KPROBE_MULTI:

    prog = obj.prog_fd("probe", BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI)   # bpfobject.BPFObject
    link = attach_kprobe_multi(prog, ["ip_rcv", "ip_output"], cookies=[1, 2])
    ...
    os.close(link)          # detaches every function of the link at once

The program sees a `struct pt_regs *` context like a kprobe; `bpf_get_attach_cookie(ctx)` gives
the cookie of the function that fired and `bpf_get_func_ip(ctx)` its address. The backend links
by address (sysbpf.link_create_kprobe_multi_addrs) and by name only when addresses are hidden.

Errors (`sysbpf.BPFError`, an OSError):
    ESRCH       a symbol is not traceable (not in available_filter_functions: inlined, notrace,
                blacklisted, or absent) -- or appears twice in the list; the whole link fails
    EOPNOTSUPP  kernel without CONFIG_FPROBE: no kprobe-multi at all
    EINVAL      kernel without kprobe-multi, program not loaded with BPF_TRACE_KPROBE_MULTI,
                empty list, or bad flags
    E2BIG       more symbols than the kernel takes in one link
    EPERM       not root, or refused by lockdown / an LSM
"""
from __future__ import annotations

from .sysbpf import BPF_TRACE_KPROBE_MULTI, link_create_kprobe_multi

__all__ = ["BPF_TRACE_KPROBE_MULTI", "attach_kprobe_multi"]


def attach_kprobe_multi(prog_fd: int, symbols: list[str], cookies: list[int] | None = None,
                        retprobe: bool = False) -> int:
    """One link for all `symbols` (each gets the cookie at the same index); returns the link fd."""
    if not symbols:
        raise ValueError("kprobe-multi needs at least one symbol")
    seen: set[str] = set()
    dups = sorted({s for s in symbols if s in seen or seen.add(s)})
    if dups:
        raise ValueError(f"kprobe-multi symbols listed twice (the kernel would answer ESRCH): {', '.join(dups)}")
    if cookies is not None and len(cookies) != len(symbols):
        raise ValueError(f"{len(cookies)} cookies for {len(symbols)} symbols")
    return link_create_kprobe_multi(prog_fd, list(symbols), cookies, retprobe=retprobe)
