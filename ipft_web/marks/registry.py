"""The rules this process applied (in memory), removed per session, on demand, and at exit.

The kernel tables stay the source of truth: a rule is removed by its tag, so a registry entry whose
rule was already deleted by hand removes nothing and is forgotten all the same.
"""
from __future__ import annotations

import atexit
import signal
import threading

from ..errors import EnvError, UsageError
from ..logs import get_logger
from . import apply as _apply
from . import render
from .spec import MarkSpec

log = get_logger(__name__)
MAX_RULES = 64


class Registry:
    def __init__(self, max_rules: int = MAX_RULES):
        self.max_rules = max_rules
        self._rules: dict[str, _apply.AppliedRule] = {}
        self._lock = threading.RLock()
        self._atexit = False

    def add(self, spec: MarkSpec, session: str | None = None) -> _apply.AppliedRule:
        """Apply a rule and remember it (EnvError when it cannot be applied or too many are active)."""
        with self._lock:
            if len(self._rules) >= self.max_rules:
                raise EnvError(f"{self.max_rules} marking rules are active already: remove some first")
            if not self._atexit:
                atexit.register(self.remove_all)
                self._atexit = True
            rule = _apply.apply(spec, session=session)
            self._rules[rule.id] = rule
            return rule

    def get(self, rule_id: str):
        with self._lock:
            return self._rules.get(rule_id)

    def list(self) -> list:
        with self._lock:
            return sorted(self._rules.values(), key=lambda r: r.created)

    def ids(self) -> set:
        with self._lock:
            return set(self._rules)

    def remove(self, rule_id: str) -> list[str]:
        """Remove one rule (KeyError if unknown). The entry is kept when the tool refuses."""
        with self._lock:
            rule = self._rules[rule_id]
            done = _apply.remove(rule)
            self._rules.pop(rule_id, None)
            return done

    def check_unowned(self, ids) -> None:
        """UsageError unless every id names an active rule that no session owns yet."""
        with self._lock:
            for rule_id in ids:
                rule = self._rules.get(rule_id) if isinstance(rule_id, str) and render.ID_RE.fullmatch(rule_id) else None
                if rule is None:
                    raise UsageError(f"no active marking rule {str(rule_id)!r:.60}")
                if rule.session is not None:
                    raise UsageError(f"marking rule {rule_id} belongs to session {rule.session} already")

    def adopt(self, ids, session: str) -> None:
        """Give unowned rules to a session: they are removed when it ends."""
        with self._lock:
            for rule_id in ids:
                rule = self._rules.get(rule_id)
                if rule is not None and rule.session is None:
                    rule.session = session

    def remove_session(self, session: str) -> list[str]:
        """Remove the rules made for a session (call when the session ends)."""
        with self._lock:
            ids = [r.id for r in self._rules.values() if r.session == session]
        return self._remove_ids(ids)

    def remove_all(self) -> list[str]:
        with self._lock:
            ids = list(self._rules)
        return self._remove_ids(ids)

    def _remove_ids(self, ids) -> list[str]:
        done: list[str] = []
        for rule_id in ids:
            try:
                done += self.remove(rule_id)
            except KeyError:
                pass
            except EnvError as exc:
                log.warning("could not remove marking rule ipft-web:%s: %s", rule_id, exc)
        return done


REGISTRY = Registry()


def install_exit_handlers(registry: Registry = REGISTRY, signals=(signal.SIGTERM, signal.SIGHUP)) -> None:
    """For long-running servers: remove every rule on SIGTERM/SIGHUP (and at exit, via atexit).

    Call from the main thread. A previous Python handler is called afterwards; otherwise the process
    exits (SystemExit) with 128 + signal number. SIGINT already ends Python with KeyboardInterrupt, so atexit runs.
    """
    for signum in signals:
        previous = signal.getsignal(signum)

        def handler(num, frame, previous=previous):
            registry.remove_all()
            if callable(previous):
                previous(num, frame)
            else:
                raise SystemExit(128 + num)

        signal.signal(signum, handler)
    atexit.register(registry.remove_all)
