"""Sessions and their journeys in an embedded SQLite database, so finished sessions survive restarts.

Journeys are kept as the JSON text they arrived as (the Journey format of docs/design.md) and
handed back verbatim. One connection, guarded by a lock that is never held across a yield.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from ..errors import EnvError

DB_NAME = "ipft-web.sqlite3"
LOCK_NAME = "ipft-web.lock"
MAX_ID = 2**62

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    ended REAL,
    state TEXT NOT NULL,
    error TEXT,
    tracer TEXT NOT NULL,
    config TEXT NOT NULL,
    stats TEXT,
    journeys INTEGER NOT NULL DEFAULT 0,
    drops INTEGER NOT NULL DEFAULT 0,
    over_cap INTEGER NOT NULL DEFAULT 0,
    cap INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS journeys (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    dropped INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
"""
FINISHED = ("stopped", "error", "interrupted")


class Store:
    def __init__(self, data_dir):
        self.dir = Path(data_dir)
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.lockfile = self._lock(self.dir / LOCK_NAME)
            self.path = self.dir / DB_NAME
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise EnvError(f"cannot use data directory {self.dir}: {getattr(exc, 'strerror', None) or exc}"
                           " (choose another with --data-dir)") from None
        self.lock = threading.Lock()
        self._seq: dict[int, int] = {}

    def _lock(self, path: Path):
        """One server per data directory: a second one would mark the first one's session interrupted."""
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "?"
            f.close()
            raise EnvError(f"data directory {self.dir} is in use by another ipft-web (pid {owner});"
                           " stop it or choose another --data-dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        return f

    def close(self) -> None:
        with self.lock:
            self.db.close()
        self.lockfile.close()

    # -- sessions ------------------------------------------------------------------------
    def recover(self) -> int:
        """Sessions a previous process left running are marked interrupted; returns how many."""
        with self.lock:
            cur = self.db.execute(
                "UPDATE sessions SET state='interrupted', ended=COALESCE(ended, ?),"
                " error=COALESCE(error, 'the server stopped while this session was running')"
                " WHERE state NOT IN ('stopped', 'error', 'interrupted')", (time.time(),))
            return cur.rowcount

    def create_session(self, config: dict, tracer: str, cap: int, keep: int | None = None) -> int:
        with self.lock:
            self.db.execute("BEGIN")
            try:
                cur = self.db.execute(
                    "INSERT INTO sessions (created, state, tracer, config, cap) VALUES (?, 'starting', ?, ?, ?)",
                    (time.time(), tracer, json.dumps(config), cap))
                sid = cur.lastrowid
                if keep:
                    old = [r[0] for r in self.db.execute(
                        "SELECT id FROM sessions WHERE id <> ? AND state IN ('stopped', 'error', 'interrupted')"
                        " ORDER BY id DESC LIMIT -1 OFFSET ?", (sid, max(keep - 1, 0)))]
                    for oid in old:
                        self.db.execute("DELETE FROM journeys WHERE session_id=?", (oid,))
                        self.db.execute("DELETE FROM sessions WHERE id=?", (oid,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self._seq[sid] = 0
            return sid

    def update_session(self, sid: int, **fields) -> None:
        allowed = {"state", "error", "ended", "stats", "journeys", "drops", "over_cap"}
        cols, vals = [], []
        for key, value in fields.items():
            if key not in allowed:
                raise KeyError(key)
            cols.append(f"{key}=?")
            vals.append(json.dumps(value) if key == "stats" else value)
        if not cols:
            return
        with self.lock:
            self.db.execute(f"UPDATE sessions SET {', '.join(cols)} WHERE id=?", (*vals, sid))

    def session(self, sid: int) -> dict | None:
        if not 0 < sid < MAX_ID:
            return None
        with self.lock:
            row = self.db.execute(f"SELECT {self._cols} FROM sessions WHERE id=?", (sid,)).fetchone()
        return self._session_dict(row) if row else None

    def sessions(self, limit: int = 200) -> list[dict]:
        with self.lock:
            rows = self.db.execute(f"SELECT {self._cols} FROM sessions ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [self._session_dict(r) for r in rows]

    def delete_session(self, sid: int) -> bool:
        with self.lock:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM journeys WHERE session_id=?", (sid,))
            n = self.db.execute("DELETE FROM sessions WHERE id=?", (sid,)).rowcount
            self.db.execute("COMMIT")
            return n > 0

    _cols = "id, created, ended, state, error, tracer, config, stats, journeys, drops, over_cap, cap"

    @staticmethod
    def _session_dict(row) -> dict:
        sid, created, ended, state, error, tracer, config, stats, journeys, drops, over_cap, cap = row
        return {"id": sid, "created": created, "ended": ended, "state": state, "error": error,
                "tracer": tracer, "config": json.loads(config), "stats": json.loads(stats) if stats else None,
                "journeys": journeys, "drops": drops, "over_cap": over_cap, "cap": cap,
                "capped": over_cap > 0}

    # -- journeys ------------------------------------------------------------------------
    def add_journeys(self, sid: int, journeys: list[dict]) -> list[str]:
        """Store journeys; returns their JSON text, in order."""
        if not journeys:
            return []
        texts = [json.dumps(j, separators=(",", ":")) for j in journeys]
        with self.lock:
            seq = self._seq.get(sid)
            if seq is None:
                seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM journeys WHERE session_id=?",
                                      (sid,)).fetchone()[0]
            rows = []
            for j, text in zip(journeys, texts):
                seq += 1
                rows.append((sid, seq, 1 if j.get("drop_reason") else 0, text))
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO journeys (session_id, seq, dropped, data) VALUES (?, ?, ?, ?)", rows)
            self.db.execute("COMMIT")
            self._seq[sid] = seq
        return texts

    def journey_texts(self, sid: int, after: int = 0, limit: int = 1000) -> list[tuple[int, str]]:
        """(seq, JSON text) of a session's journeys with seq > after, oldest first."""
        with self.lock:
            return self.db.execute(
                "SELECT seq, data FROM journeys WHERE session_id=? AND seq>? ORDER BY seq LIMIT ?",
                (sid, after, limit)).fetchall()

    def iter_journey_texts(self, sid: int, chunk: int = 2000):
        after = 0
        while True:
            rows = self.journey_texts(sid, after, chunk)
            if not rows:
                return
            for seq, text in rows:
                yield text
            after = rows[-1][0]


def default_data_dir() -> str:
    return os.environ.get("IPFT_WEB_DATA_DIR") or "/var/lib/ipft-web"
