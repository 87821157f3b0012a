"""Rules tagged ipft-web:* that nobody owns any more (the owner was SIGKILLed, or they were typed by hand).

A rule id names its owner process (pid and start time, see owner.py). A rule is left behind when that
process is gone, or when it is this process but the rule is not in this process's registry. Looked for in this network
namespace and in every named one (/run/netns); namespaces without a name cannot be reached.
"""
from __future__ import annotations

import os
import sys

from ..errors import EnvError
from . import apply, listing, runner
from .owner import owner, owner_alive
from .registry import REGISTRY, Registry
from .spec import _NETNS

NETNS_DIR = "/run/netns"


def named_netns() -> list[str]:
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []
    return [n for n in names if _NETNS.fullmatch(n) and n not in (".", "..")]


def is_leftover(t: listing.Tagged, registry: Registry = REGISTRY) -> bool:
    pid, _ = owner(t.rule_id)
    if pid == os.getpid() and owner_alive(t.rule_id):
        return t.rule_id not in registry.ids()
    return not owner_alive(t.rule_id)


def find_leftovers(namespaces=None, registry: Registry = REGISTRY) -> list[listing.Tagged]:
    """Tagged rules without a live owner. `namespaces`: list of netns names, None meaning this
    namespace; default: this one and every named one. EnvError when a table cannot be read."""
    runner.require_root()
    spaces = [None, *named_netns()] if namespaces is None else list(namespaces)
    found = []
    for ns in spaces:
        found += [t for t in listing.list_tagged(ns) if is_leftover(t, registry)]
    return found


def remove_leftovers(namespaces=None, registry: Registry = REGISTRY) -> list[str]:
    """Remove what find_leftovers finds; returns the commands run."""
    return apply.delete_tagged(find_leftovers(namespaces, registry))


def leftover_warning(namespaces=None) -> str | None:
    """One line for a start-up message or banner, or None (also None when it cannot look)."""
    try:
        found = find_leftovers(namespaces)
    except EnvError:
        return None
    if not found:
        return None
    ids = sorted({t.rule_id for t in found})
    return (f"{len(found)} marking rule(s) left behind by an ipft that did not exit cleanly "
            f"(ipft-web:{', ipft-web:'.join(ids[:5])}{', ...' if len(ids) > 5 else ''}): "
            f"run `ipft-web --cleanup` to remove them")


def run_cleanup(out=None, remove: bool = True, namespaces=None) -> int:
    """`ipft-web --cleanup`: list leftovers and remove them. Returns an exit status (0 ok, 2 error)."""
    out = out or sys.stderr
    try:
        found = find_leftovers(namespaces)
        for t in found:
            where = f"netns {t.netns}" if t.netns else "this namespace"
            out.write(f"left behind ({where}, {t.tool} {t.chain}): {t.text}\n")
        if not found:
            out.write("no ipft-web marking rules left behind\n")
            return 0
        if remove:
            for line in apply.delete_tagged(found):
                out.write(f"removed: {line}\n")
        return 0
    except EnvError as exc:
        out.write(f"ipft-web: error: {exc}\n")
        return 2


def cleanup() -> list[str]:
    """Remove every rule this process applied (the web server calls it on shutdown)."""
    return REGISTRY.remove_all()
