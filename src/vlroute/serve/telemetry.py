"""Every request the gateway answers, one row each, in SQLite (WAL, one file).

A row is committed before the response leaves the gateway (non-streamed) or when the stream
ends, so a crash cannot lose the row of an answered request. Prompts are stored only when the
operator opts in (``telemetry.store_prompts``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from vlroute.serve.config import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, key_id TEXT, scenario TEXT, chosen TEXT,
    predicted TEXT, fallback_path TEXT, status INTEGER, ttft_ms REAL, total_ms REAL,
    route_ms REAL, tokens_in INTEGER, tokens_out INTEGER, cost_usd REAL, prompt TEXT,
    score REAL
)"""
COLUMNS = ("id", "ts", "key_id", "scenario", "chosen", "predicted", "fallback_path", "status",
           "ttft_ms", "total_ms", "route_ms", "tokens_in", "tokens_out", "cost_usd", "prompt")


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` -> a path."""
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"telemetry url {url!r}: only sqlite:///PATH is supported in this "
                          "version.")
    return Path(url.removeprefix("sqlite:///"))


class TelemetryStore:
    """A thread-safe SQLite store (the app calls it from worker threads)."""

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(SCHEMA)

    def record(self, row: dict[str, Any]) -> None:
        """Insert one request (committed on return)."""
        values = [json.dumps(row[c]) if c in ("predicted", "fallback_path") else row.get(c)
                  for c in COLUMNS]
        with self._lock:
            self._db.execute(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
                             f"({', '.join('?' * len(COLUMNS))})", values)

    def feedback(self, request_id: str, score: float) -> bool:
        """Attach a score in [0, 1]; False when the id is unknown."""
        with self._lock:
            cur = self._db.execute("UPDATE requests SET score = ? WHERE id = ?",
                                   (score, request_id))
        return cur.rowcount == 1

    def spent_since(self, key_id: str, since: float) -> float:
        """USD recorded for ``key_id`` from the epoch time ``since`` on."""
        with self._lock:
            cur = self._db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE "
                                   "key_id = ? AND ts >= ?", (key_id, since))
            return float(cur.fetchone()[0])

    def rows(self) -> list[dict[str, Any]]:
        """Every row (for tests and export), oldest first."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM requests ORDER BY ts")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()
