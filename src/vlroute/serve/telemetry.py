"""Every request the gateway answers, one row each: in SQLite (WAL, one file; the default) or
in PostgreSQL, chosen by the telemetry URL (``sqlite:///PATH``, ``postgresql://...``).

A row is committed before the response leaves the gateway (non-streamed) or when the stream
ends, so a crash cannot lose the row of an answered request. For PostgreSQL the
:class:`Recorder` commits the rows of concurrent requests together (group commit) on one
writer thread, so the event loop never waits on the network and a busy gateway pays one
commit per batch, not per request.
Prompts are stored only when the operator opts in (``telemetry.store_prompts``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from vlroute.serve.config import ConfigError

COLUMNS = ("id", "ts", "key_id", "scenario", "chosen", "predicted", "fallback_path", "status",
           "ttft_ms", "total_ms", "route_ms", "tokens_in", "tokens_out", "cost_usd", "prompt")
JSON_COLUMNS = ("predicted", "fallback_path")
TYPES = {"id": "TEXT PRIMARY KEY", "ts": "{real} NOT NULL", "status": "INTEGER",
         "tokens_in": "INTEGER", "tokens_out": "INTEGER", "ttft_ms": "{real}",
         "total_ms": "{real}", "route_ms": "{real}", "cost_usd": "{real}", "score": "{real}"}


def schema(real: str) -> str:
    cols = ", ".join(f"{c} {TYPES.get(c, 'TEXT').format(real=real)}"
                     for c in (*COLUMNS, "score"))
    return f"CREATE TABLE IF NOT EXISTS requests ({cols})"


def _values(row: dict[str, Any]) -> list[Any]:
    return [json.dumps(row.get(c)) if c in JSON_COLUMNS else row.get(c) for c in COLUMNS]


class TelemetryStore(Protocol):
    """What the gateway and ``vlroute logs export`` need of a store (thread-safe)."""

    url: str

    def write(self, rows: list[dict[str, Any]]) -> None: ...

    def feedback(self, request_id: str, score: float) -> bool: ...

    def spent_since(self, key_id: str, since: float) -> float: ...

    def rows(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` -> a path."""
    return Path(url.removeprefix("sqlite:///"))


def open_store(url: str) -> TelemetryStore:
    """The store a telemetry URL names."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise ConfigError(f"telemetry url {url!r}: expected sqlite:///PATH or "
                      "postgresql://[user@]host[:port]/dbname.")


class SQLiteStore:
    """One SQLite file in WAL mode. A commit takes tens of microseconds (no fsync per commit
    with synchronous=NORMAL), so the recorder commits on the event loop, not in a thread."""

    local = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # `vlroute serve --workers N`: N processes write the same file; wait, not fail
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(schema("REAL"))
        self._insert = (f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
                        f"({', '.join('?' * len(COLUMNS))})")

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Insert rows in one transaction (committed on return)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(self._insert, [_values(r) for r in rows])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

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


class PostgresStore:
    """A PostgreSQL table over one connection (psycopg 3). The password comes from the URL
    given through ``VLROUTE_TELEMETRY_URL`` or from libpq's ``PGPASSWORD`` / ``.pgpass``."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError("PostgreSQL telemetry needs psycopg: pip install "
                              "'vlroute[postgres]'.") from exc
        self.url = url
        self._psycopg = psycopg
        self._lock = threading.Lock()
        self._db = self._connect()
        with self._lock, self._db.transaction():
            self._db.execute(schema("DOUBLE PRECISION"))
            self._db.execute("CREATE INDEX IF NOT EXISTS requests_key_ts ON requests "
                             "(key_id, ts)")
        self._insert = (f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
                        f"({', '.join(['%s'] * len(COLUMNS))})")

    def _connect(self) -> Any:
        try:        # autocommit: every statement below runs in an explicit transaction
            return self._psycopg.connect(self.url, connect_timeout=10, autocommit=True)
        except self._psycopg.OperationalError as exc:
            raise ConfigError(f"telemetry database {_redact(self.url)}: cannot connect "
                              f"({str(exc).strip()}).") from None

    def write(self, rows: list[dict[str, Any]]) -> None:
        values = [_values(r) for r in rows]
        with self._lock:
            try:
                self._insert_all(values)
            except self._psycopg.OperationalError:
                if not self._db.closed:    # the server is up and said no: not a lost link
                    raise
                self._db = self._connect()  # the server restarted: reconnect once, retry
                self._insert_all(values)

    def _insert_all(self, values: list[list[Any]]) -> None:
        with self._db.transaction(), self._db.cursor() as cur:
            cur.executemany(self._insert, values)

    def feedback(self, request_id: str, score: float) -> bool:
        with self._lock, self._db.transaction():
            cur = self._db.execute("UPDATE requests SET score = %s WHERE id = %s",
                                   (score, request_id))
            return bool(cur.rowcount == 1)

    def spent_since(self, key_id: str, since: float) -> float:
        with self._lock, self._db.transaction():
            row = self._db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE "
                                   "key_id = %s AND ts >= %s", (key_id, since)).fetchone()
        return float(row[0]) if row else 0.0

    def rows(self) -> list[dict[str, Any]]:
        with self._lock, self._db.transaction():
            cur = self._db.execute("SELECT * FROM requests ORDER BY ts")
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _redact(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':')[0]}:***@{tail}" if ":" in user else url


class Recorder:
    """``await record(row)`` returns once the row is committed. A store marked ``local``
    (SQLite: tens of microseconds) commits at once on the loop; any other commits on one
    writer thread, with group commit: rows that arrive while a commit runs go in the next."""

    def __init__(self, store: TelemetryStore) -> None:
        self.store = store
        self._local = bool(getattr(store, "local", False))
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlroute-telemetry")

    async def record(self, row: dict[str, Any]) -> None:
        if self._local:                  # a local file: commit now, on the loop
            self.store.write([row])
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await asyncio.shield(future)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await loop.run_in_executor(self._thread, self.store.write,
                                           [row for row, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run another store method on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        self._thread.shutdown(wait=True)
