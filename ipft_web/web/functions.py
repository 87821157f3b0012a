"""The list of traceable functions behind GET /api/functions, loaded once, off the event loop.

`kernel_entries()` is the one place that asks the kernel catalog (BTF parsing takes seconds); a
replay server lists the functions of its recording instead. Entries are dicts:
{"name", "kind": "function"|"tracepoint", "pos" (1-based skb argument), "module"}.
"""
from __future__ import annotations


from ..config import compile_regex
from ..logs import get_logger

log = get_logger(__name__)


class NotReady(Exception):
    """The list is still loading, or could not be loaded (the message says which)."""


def kernel_entries() -> list[dict]:
    from ..kernel.view import KernelView
    view = KernelView.load()
    out = [{"name": f.name, "kind": "function", "pos": f.pos, "module": f.module}
           for f in view.skb_functions()]
    for tp in view.tracepoints:
        label = getattr(tp, "label", None) or f"{tp.group}:{tp.name}"
        pos = getattr(tp, "arg", None)
        out.append({"name": label, "kind": "tracepoint", "pos": pos + 1 if isinstance(pos, int) else None,
                    "module": None})
    return out


def recording_entries(path) -> list[dict]:
    from ..replay import functions_of, load_recording
    return [{"name": name, "kind": "tracepoint" if ":" in name else "function", "pos": 1, "module": None}
            for name in functions_of(load_recording(path))]


class FunctionCatalog:
    def __init__(self, loader):
        self.loader = loader
        self.state = "loading"
        self.error: str | None = None
        self.entries: list[dict] = []

    def load(self) -> None:
        """Blocking: run it off the event loop."""
        try:
            entries = sorted(self.loader(), key=lambda e: (e["kind"] != "function", e["name"]))
            self.entries, self.state = entries, "ready"
        except Exception as exc:  # a missing catalog must not take the server down
            log.warning("function list unavailable: %s", exc)
            self.error = f"function list unavailable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            self.state = "error"

    def match(self, regex: str | None, limit: int = 50) -> dict:
        pattern = compile_regex(regex)     # UsageError on a bad one
        if self.state == "loading":
            raise NotReady("the function list is still loading; try again in a few seconds")
        if self.state == "error":
            raise NotReady(self.error)
        found = [e for e in self.entries if pattern is None or pattern.search(e["name"])]
        n_tp = sum(1 for e in found if e["kind"] == "tracepoint")
        return {"regex": regex or "", "count": len(found), "functions": len(found) - n_tp,
                "tracepoints": n_tp, "total": len(self.entries), "shown": min(limit, len(found)),
                "matches": found[:limit]}
