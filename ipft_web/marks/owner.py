"""Rule ids name their owner: `<8 random hex>-<pid>-<process start time>`.

The start time (clock ticks since boot, /proc/PID/stat field 22) makes the owner exact: a rule is
owned while that very process runs, even after its pid is reused by another.
"""
from __future__ import annotations

import os
import secrets

from .render import ID_RE


def process_start(pid: int) -> int | None:
    """Start time of process `pid`, or None when there is no such process."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()   # the command name may contain spaces and parens
    try:
        return int(fields[19])                      # field 22 overall; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def new_rule_id(pid: int | None = None) -> str:
    """An id owned by this process (pid=0: by nobody, e.g. a command shown for copying by hand)."""
    if pid is None:
        pid = os.getpid()
        start = process_start(pid) or 0
    else:
        start = (process_start(pid) or 0) if pid else 0
    return f"{secrets.token_hex(4)}-{pid}-{start}"


def owner(rule_id: str) -> tuple[int, int]:
    if not ID_RE.fullmatch(rule_id):
        raise ValueError(f"bad rule id {rule_id!r}")
    _, pid, start = rule_id.split("-")
    return int(pid), int(start)


def owner_alive(rule_id: str) -> bool:
    pid, start = owner(rule_id)
    return pid > 0 and process_start(pid) == start
