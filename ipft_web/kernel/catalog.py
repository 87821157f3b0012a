"""Which kernel functions and raw tracepoints take a struct sk_buff *, and which can be traced.

A function is in the catalog when its prototype (BTF or DWARF) has a `struct sk_buff *` param
(const, volatile and typedefs looked through); `pos` is that param's 1-based position, kept
as is (kprobes read only positions 1-5 from registers on x86-64: callers filter). It is
traceable when ftrace's available_filter_functions lists it, or, where that list can't be read,
when it is a text symbol in /proc/kallsyms and not in the kprobe blacklist.
"""
from __future__ import annotations

import os
import re

from ..config import compile_regex as _compile_regex
from ..records import record
from . import kallsyms as kallsyms_mod

SOURCE_FTRACE = "available_filter_functions"
SOURCE_KALLSYMS = "kallsyms-minus-blacklist"
SOURCE_TYPES = "type-info-only"  # no symbol list at all: every function with type info

STRUCT = "sk_buff"
TP_PREFIX = "btf_trace_"
EVENTS_DIRS = ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")

# Tracepoint group when tracefs can't tell (tracepoints with an skb in Linux 5.x-6.x).
KNOWN_GROUPS = {
    "consume_skb": "skb", "kfree_skb": "skb", "skb_copy_datagram_iovec": "skb",
    "icmp_send": "icmp",
    "napi_gro_frags_entry": "net", "napi_gro_receive_entry": "net", "net_dev_queue": "net",
    "net_dev_start_xmit": "net", "net_dev_xmit": "net", "netif_receive_skb": "net",
    "netif_receive_skb_entry": "net", "netif_receive_skb_list_entry": "net", "netif_rx": "net",
    "netif_rx_entry": "net", "netif_rx_ni_entry": "net",
    "qdisc_dequeue": "qdisc", "qdisc_enqueue": "qdisc",
    "sock_rcvqueue_full": "sock",
    "subflow_check_data_avail": "mptcp",
    "tcp_ao_handshake_failure": "tcp", "tcp_bad_csum": "tcp", "tcp_hash_ao_required": "tcp",
    "tcp_hash_bad_header": "tcp", "tcp_hash_md5_mismatch": "tcp", "tcp_hash_md5_required": "tcp",
    "tcp_hash_md5_unexpected": "tcp", "tcp_probe": "tcp", "tcp_retransmit_skb": "tcp",
    "tcp_send_reset": "tcp", "tcp_sendmsg_locked": "tcp", "tcp_rcv_space_adjust": "tcp",
    "udp_fail_queue_rcv_skb": "udp",
    "devlink_trap_report": "devlink",
}


@record(frozen=True)
class CatalogEntry:
    name: str
    module: str | None
    pos: int                 # 1-based position of the first struct sk_buff * param (0: none)
    duplicate: bool = False  # the name occurs more than once in kallsyms (kprobe-multi refuses it)


@record(frozen=True)
class SkbTracepoint:
    name: str                # "netif_receive_skb"
    group: str | None        # "net"
    arg: int                 # index into the raw tracepoint's args[] (the void * context skipped)

    @property
    def label(self) -> str:
        return f"{self.group}:{self.name}" if self.group else self.name


_UNSET = object()


class Catalog:
    """skb functions and tracepoints of one kernel (see module doc)."""

    def __init__(self, typedb, kallsyms=None, *, available=_UNSET, blacklist=_UNSET,
                 events_dirs: tuple[str, ...] = EVENTS_DIRS):
        """`available` / `blacklist`: sets of names, or None for "unreadable"; read from the
        system when not given. `kallsyms`: a kallsyms.Kallsyms (loaded when None)."""
        self.typedb = typedb
        self.type_ids: dict = {}   # (function, module) -> type id, met by skb_functions()
        self.kallsyms = kallsyms if kallsyms is not None else kallsyms_mod.load()
        self._events_dirs = events_dirs
        notes = []
        if available is _UNSET:
            available, why = kallsyms_mod.read_available_filter_functions()
            notes.append(why)
        if available is not None:
            self.source = SOURCE_FTRACE
            self._traceable = set(available)
            self._blacklist = set()
        else:
            if blacklist is _UNSET:
                blacklist, why = kallsyms_mod.read_blacklist()
                notes.append(why)
            self._blacklist = set(blacklist or ())
            if len(self.kallsyms):
                self.source = SOURCE_KALLSYMS
                self._traceable = None  # kallsyms names minus blacklist, checked per name
            else:
                self.source = SOURCE_TYPES
                self._traceable = None
                notes.append("/proc/kallsyms has no text symbols")
        self.notes = [n for n in notes if n]
        self._skb: list[CatalogEntry] | None = None
        self._tps: list[SkbTracepoint] | None = None

    # -- functions -----------------------------------------------------------------------------
    def is_traceable(self, name: str) -> bool:
        if self._traceable is not None:
            return name in self._traceable
        if self.source == SOURCE_TYPES:
            return True
        return name in self.kallsyms and name not in self._blacklist

    def skb_functions(self) -> list[CatalogEntry]:
        """Every function whose type info has a struct sk_buff * param, traceable or not, by name."""
        if self._skb is None:
            seen = set()
            out = []
            found = list(_struct_ptr_functions(self.typedb, STRUCT, self.type_ids))
            ask = getattr(self.kallsyms, "ask", None)
            if ask is not None:   # kallsyms answered by a forked reader: every name in one round
                ask([name for name, _m, _p in found])
            dup = self.kallsyms.is_duplicate
            for name, module, pos in found:
                if (name, module) in seen:
                    continue
                seen.add((name, module))
                out.append(CatalogEntry(name, module, pos, dup(name)))
            out.sort(key=lambda e: (e.name, e.module or ""))
            self._skb = out
        return self._skb

    def traceable_skb_functions(self) -> list[CatalogEntry]:
        return [e for e in self.skb_functions() if self.is_traceable(e.name)]

    @property
    def traceable(self) -> list[CatalogEntry]:
        return self.traceable_skb_functions()

    def match(self, regex) -> list[CatalogEntry]:
        """Traceable skb functions whose name the regex finds something in (re.search)."""
        pattern = compile_regex(regex)
        return [e for e in self.traceable_skb_functions() if pattern.search(e.name)]

    def entry(self, name: str) -> CatalogEntry | None:
        """The entry of a traceable function whatever its params (pos 0 if it has no skb), or None."""
        if not self.is_traceable(name):
            return None
        for e in self.skb_functions():
            if e.name == name:
                return e
        if not self.is_traceable(name):
            return None
        try:
            params = self.typedb.func_params(name)
        except KeyError:
            return None
        pos = next((i for i, p in enumerate(params, 1) if p.struct_ptr == STRUCT), 0)
        return CatalogEntry(name, self.kallsyms.module(name), pos, self.kallsyms.is_duplicate(name))

    # -- raw tracepoints -----------------------------------------------------------------------
    def skb_tracepoints(self) -> list[SkbTracepoint]:
        """Raw tracepoints whose btf_trace_<name> prototype has a struct sk_buff * param."""
        if self._tps is None:
            groups = self._event_groups()
            out, seen = [], set()
            for typedef, i in _struct_ptr_typedefs(self.typedb, TP_PREFIX, STRUCT):
                name = typedef[len(TP_PREFIX):]
                if name not in seen:   # the first type info that has it (vmlinux, then modules)
                    seen.add(name)
                    out.append(SkbTracepoint(name, groups.get(name) or KNOWN_GROUPS.get(name), i))
            out.sort(key=lambda t: t.label)
            self._tps = out
        return self._tps

    def kfree_skb_args(self) -> dict:
        """{"skb": i, "location": i|None, "reason": i|None}: indices of skb:kfree_skb's args
        (the void * context skipped); {} when the kernel has no such tracepoint."""
        try:
            params = self.typedb.typedef_func_params(TP_PREFIX + "kfree_skb")[1:]
        except KeyError:
            return {}
        skb = next((i for i, p in enumerate(params) if p.struct_ptr == STRUCT), None)
        if skb is None:
            return {}
        reason = next((i for i, p in enumerate(params)
                       if p.type_name == "enum skb_drop_reason" or p.name == "reason"), None)
        location = next((i for i, p in enumerate(params)
                         if i > skb and (p.name == "location" or p.type_name == "void *")), None)
        return {"skb": skb, "location": location, "reason": reason}

    def _event_groups(self) -> dict[str, str]:
        """Tracepoint name -> group from tracefs events/<group>/<name> (empty when not mounted)."""
        groups: dict[str, str] = {}
        for d in self._events_dirs:
            try:
                with os.scandir(d) as it:
                    group_dirs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            for g in group_dirs:
                try:
                    with os.scandir(os.path.join(d, g)) as it:
                        for e in it:
                            if e.is_dir(follow_symlinks=False):
                                groups.setdefault(e.name, g)
                except OSError:
                    continue
            if groups:
                break
        return groups

    # -- summary -------------------------------------------------------------------------------
    def describe(self) -> str:
        """One line: "2424 skb functions, 2101 traceable (kallsyms-minus-blacklist), 30 tracepoints"."""
        return (f"{len(self.skb_functions())} skb functions, {len(self.traceable_skb_functions())} traceable "
                f"({self.source}), {len(self.skb_tracepoints())} skb tracepoints")


def compile_regex(regex):
    """A compiled pattern (the one validation of ipft_web.config); "" or None match everything."""
    return _compile_regex(regex) or re.compile("")


def _struct_ptr_functions(typedb, struct: str, ids: dict):
    fast = getattr(typedb, "functions_with_struct_ptr", None)
    if fast is not None:
        yield from fast(struct, ids)
        return
    for f in typedb.functions():
        for i, p in enumerate(f.params, 1):
            if p.struct_ptr == struct:
                yield f.name, f.module, i
                break


def _struct_ptr_typedefs(typedb, prefix: str, struct: str):
    """(typedef, index of the param after the first that points to `struct`) for the typedefs
    named prefix* of a function type (raw tracepoints' btf_trace_<name>)."""
    fast = getattr(typedb, "typedefs_with_struct_ptr", None)
    if fast is not None:
        yield from fast(prefix, struct)
        return
    names = getattr(typedb, "typedef_names", None)
    for typedef in (names(prefix) if names is not None else []):
        try:
            params = typedb.typedef_func_params(typedef)
        except KeyError:
            continue
        for i, p in enumerate((params or ())[1:]):
            if p.struct_ptr == struct:
                yield typedef, i
                break
