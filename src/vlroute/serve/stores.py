"""The gateway's database: SQLite (WAL, one file; the default) or PostgreSQL, chosen by the
telemetry URL (``sqlite:///PATH``, ``postgresql://...``). Every worker of ``vlroute serve
--workers N`` opens the same database, so what must hold across workers lives here:

- ``requests``: one row per answered request (telemetry; ``score`` from feedback);
- ``budget_spend``: USD booked per (API key, period), kept in the same transaction as the
  request rows, so a budget check reads two small rows, not a month of requests;
- ``budget_holds``: reservations of requests in flight, one per (request, period); a
  request's row deletes its holds in the transaction that books its cost;
- ``sessions``: the backend an ``x-vlroute-session`` conversation is pinned to.

The SQL is written once, with ``?`` placeholders; each store supplies its transactions and
its lock for reservations (SQLite: ``BEGIN IMMEDIATE``, a database-wide write lock;
PostgreSQL: an advisory lock per API key).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from vlroute.serve.config import ConfigError

T = TypeVar("T")

COLUMNS = ("id", "ts", "key_id", "scenario", "chosen", "predicted", "fallback_path", "status",
           "ttft_ms", "total_ms", "route_ms", "tokens_in", "tokens_out", "cost_usd", "prompt")
JSON_COLUMNS = ("predicted", "fallback_path")
TYPES = {"id": "TEXT PRIMARY KEY", "ts": "{real} NOT NULL", "status": "INTEGER",
         "tokens_in": "INTEGER", "tokens_out": "INTEGER", "ttft_ms": "{real}",
         "total_ms": "{real}", "route_ms": "{real}", "cost_usd": "{real}", "score": "{real}"}
#: how long an SQLite operation waits for a lock held by another connection or worker
BUSY_TIMEOUT_MS = 2000
#: a conversation's pin is forgotten this long after its first turn
SESSION_TTL_S = 7 * 86400.0


def periods(now: dt.datetime) -> dict[str, str]:
    """The budget periods (UTC) a moment falls in: {"day": "2026-11-23", "month": "2026-11"}."""
    return {"day": now.strftime("%Y-%m-%d"), "month": now.strftime("%Y-%m")}


def schema(real: str) -> list[str]:
    cols = ", ".join(f"{c} {TYPES.get(c, 'TEXT').format(real=real)}"
                     for c in (*COLUMNS, "score"))
    return [f"CREATE TABLE IF NOT EXISTS requests ({cols})",
            f"CREATE TABLE IF NOT EXISTS budget_spend (key_id TEXT NOT NULL, period TEXT NOT "
            f"NULL, spent {real} NOT NULL, PRIMARY KEY (key_id, period))",
            f"CREATE TABLE IF NOT EXISTS budget_holds (id TEXT NOT NULL, period TEXT NOT NULL, "
            f"key_id TEXT NOT NULL, amount {real} NOT NULL, expires {real} NOT NULL, "
            f"PRIMARY KEY (id, period))",
            "CREATE INDEX IF NOT EXISTS budget_holds_key ON budget_holds (key_id, period)",
            f"CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, backend TEXT NOT NULL, "
            f"ts {real} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS sessions_ts ON sessions (ts)"]


def _values(row: dict[str, Any]) -> list[Any]:
    """A row's column values; text without NUL characters (PostgreSQL refuses them)."""
    out = []
    for c in COLUMNS:
        value = json.dumps(row.get(c)) if c in JSON_COLUMNS else row.get(c)
        out.append(value.replace("\x00", "") if isinstance(value, str) else value)
    return out


def _spend(rows: Sequence[tuple[Any, Any, Any]]) -> list[tuple[str, str, float]]:
    """(key, ts, cost) rows -> USD per (key, day) and (key, month)."""
    out: defaultdict[tuple[str, str], float] = defaultdict(float)
    for key, ts, cost in rows:
        if key is None or not cost:
            continue
        for period in periods(dt.datetime.fromtimestamp(ts, dt.UTC)).values():
            out[(key, period)] += cost
    return [(key, period, cost) for (key, period), cost in out.items()]


class Query(Protocol):
    """What a transaction offers the shared SQL."""

    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...   # rows changed

    def many(self, sql: str, seq: Sequence[Sequence[Any]]) -> None: ...

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def names(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]: ...


class TelemetryStore(Protocol):
    """What the gateway and ``vlroute logs export`` need of a store (thread-safe)."""

    url: str

    def write(self, rows: list[dict[str, Any]]) -> None: ...

    def feedback(self, request_id: str, score: float) -> bool: ...

    def reserve(self, key_id: str, hold_id: str, amount: float, limits: dict[str, float],
                now: float, expires: float) -> tuple[str, float, float] | None: ...

    def release(self, hold_id: str) -> None: ...

    def spent(self, key_id: str, period: str) -> float: ...

    def usage(self, key_id: str, periods: list[str], now: float) -> dict[str, tuple[float,
                                                                                  float]]: ...

    def pin(self, session: str, backend: str, now: float) -> tuple[str, float]: ...

    def pinned(self, session: str, now: float) -> tuple[str, float] | None: ...

    def rows(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


_INSERT = (f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
           f"({', '.join('?' * len(COLUMNS))}) ON CONFLICT (id) DO NOTHING")
_BOOK = ("INSERT INTO budget_spend (key_id, period, spent) VALUES (?, ?, ?) ON CONFLICT "
         "(key_id, period) DO UPDATE SET spent = budget_spend.spent + excluded.spent")
_USED = ("SELECT COALESCE((SELECT spent FROM budget_spend WHERE key_id = ? AND period = ?), 0)"
         " + COALESCE((SELECT SUM(amount) FROM budget_holds WHERE key_id = ? AND period = ?), 0)")


class SQLStore:
    """The SQL every store shares; subclasses provide :meth:`_tx` and :meth:`_has_table`."""

    url: str
    real = "REAL"

    def _tx(self, fn: Callable[[Query], T], *, write: bool = True,
            lock: str | None = None) -> T:
        raise NotImplementedError

    def _has_table(self, q: Query, name: str) -> bool:
        raise NotImplementedError

    def _migrate(self, q: Query) -> None:
        """Create the tables; a database from before budget_spend gets it filled from its
        requests, so spend recorded then still counts."""
        backfill = not self._has_table(q, "budget_spend")
        for statement in schema(self.real):
            q.run(statement)
        if backfill:
            q.many(_BOOK, _spend(q.all("SELECT key_id, ts, cost_usd FROM requests WHERE "
                                       "key_id IS NOT NULL AND cost_usd IS NOT NULL")))

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Insert request rows in one transaction, with the spend they book and the release
        of their budget holds (committed on return; all or nothing). A row whose id is in
        the table already (a spool replayed twice) is skipped, and books nothing."""

        def work(q: Query) -> None:
            fresh = [r for r in rows if q.run(_INSERT, _values(r)) == 1]
            keyed = [(r["key_id"], r["ts"], r.get("cost_usd")) for r in fresh
                     if r.get("key_id")]
            if keyed:
                q.many(_BOOK, _spend(keyed))
                q.many("DELETE FROM budget_holds WHERE id = ?",
                       [(r["id"],) for r in rows if r.get("key_id")])
        self._tx(work)

    def feedback(self, request_id: str, score: float) -> bool:
        """Attach a score in [0, 1]; False when the id is unknown."""
        return self._tx(lambda q: q.run("UPDATE requests SET score = ? WHERE id = ?",
                                        (score, request_id))) == 1

    def reserve(self, key_id: str, hold_id: str, amount: float, limits: dict[str, float],
                now: float, expires: float) -> tuple[str, float, float] | None:
        """Hold ``amount`` USD against each ``period -> limit`` of ``key_id``, unless one
        would go over: then hold nothing and return (period, limit, spent and held so
        far). Holds of other requests expire at ``expires`` (a crashed worker's holds do
        not block a key forever)."""

        def work(q: Query) -> tuple[str, float, float] | None:
            q.run("DELETE FROM budget_holds WHERE key_id = ? AND expires < ?", (key_id, now))
            for period, limit in limits.items():
                used = float(q.all(_USED, (key_id, period, key_id, period))[0][0])
                if used + amount > limit:
                    return period, limit, used
            q.many("INSERT INTO budget_holds (id, period, key_id, amount, expires) VALUES "
                   "(?, ?, ?, ?, ?)", [(hold_id, p, key_id, amount, expires) for p in limits])
            return None
        return self._tx(work, lock=f"vlroute-budget:{key_id}")

    def release(self, hold_id: str) -> None:
        """Drop a request's holds without booking anything (it failed before a row)."""
        self._tx(lambda q: q.run("DELETE FROM budget_holds WHERE id = ?", (hold_id,)))

    def usage(self, key_id: str, periods: list[str], now: float) -> dict[str, tuple[float,
                                                                                  float]]:
        """(spent, held by requests in flight) USD of ``key_id`` per period."""

        def work(q: Query) -> dict[str, tuple[float, float]]:
            out = {}
            for period in periods:
                spent = q.all("SELECT spent FROM budget_spend WHERE key_id = ? AND period = ?",
                              (key_id, period))
                held = q.all("SELECT COALESCE(SUM(amount), 0) FROM budget_holds WHERE "
                             "key_id = ? AND period = ? AND expires >= ?",
                             (key_id, period, now))
                out[period] = (float(spent[0][0]) if spent else 0.0, float(held[0][0]))
            return out
        return self._tx(work, write=False)

    def spent(self, key_id: str, period: str) -> float:
        """USD booked for ``key_id`` in a period ("2026-11-23" or "2026-11")."""
        return self.usage(key_id, [period], 0.0)[period][0]

    def pin(self, session: str, backend: str, now: float) -> tuple[str, float]:
        """Pin ``session`` to ``backend`` unless it is pinned already; the backend it is
        pinned to and since when (when two workers race, the first commit wins)."""

        def work(q: Query) -> tuple[str, float]:
            q.run("DELETE FROM sessions WHERE ts < ?", (now - SESSION_TTL_S,))
            q.run("INSERT INTO sessions (id, backend, ts) VALUES (?, ?, ?) ON CONFLICT (id) DO "
                  "NOTHING", (session, backend, now))
            found = q.all("SELECT backend, ts FROM sessions WHERE id = ?", (session,))[0]
            return str(found[0]), float(found[1])
        return self._tx(work)

    def pinned(self, session: str, now: float) -> tuple[str, float] | None:
        """The backend ``session`` is pinned to and since when; None when it is not, or
        its pin is over SESSION_TTL_S old."""
        found = self._tx(lambda q: q.all("SELECT backend, ts FROM sessions WHERE id = ? AND "
                                         "ts >= ?", (session, now - SESSION_TTL_S)),
                         write=False)
        return (str(found[0][0]), float(found[0][1])) if found else None

    def rows(self) -> list[dict[str, Any]]:
        """Every request row (for tests and export), oldest first."""
        names, found = self._tx(lambda q: q.names("SELECT * FROM requests ORDER BY ts"),
                                write=False)
        return [dict(zip(names, r, strict=True)) for r in found]


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


class _SQLiteQuery:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, params).rowcount

    def many(self, sql: str, seq: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(sql, seq)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, params).fetchall()

    def names(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.db.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()


class SQLiteStore(SQLStore):
    """One SQLite file in WAL mode (no fsync per commit with synchronous=NORMAL). Write
    transactions are ``BEGIN IMMEDIATE``: the file's write lock, taken up front, is what
    serialises budget reservations across workers. A lock held elsewhere is waited for
    :data:`BUSY_TIMEOUT_MS` (on the recorder's thread), then the operation fails."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._q = _SQLiteQuery(self._db)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # `vlroute serve --workers N`: N processes write the same file; wait, not fail
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._tx(self._migrate)

    def _has_table(self, q: Query, name: str) -> bool:
        return bool(q.all("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                          (name,)))

    def _tx(self, fn: Callable[[Query], T], *, write: bool = True,
            lock: str | None = None) -> T:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                out = fn(self._q)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _PostgresQuery:
    def __init__(self, db: Any) -> None:
        self.db = db

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self.db.execute(sql.replace("?", "%s"), params).rowcount)

    def many(self, sql: str, seq: Sequence[Sequence[Any]]) -> None:
        if seq:
            with self.db.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), seq)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.db.execute(sql.replace("?", "%s"), params).fetchall())

    def names(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.db.execute(sql)
        return [d.name for d in cur.description or ()], list(cur.fetchall())


class PostgresStore(SQLStore):
    """PostgreSQL over one connection (psycopg 3) in autocommit mode, every operation in an
    explicit transaction. After the server dropped the connection (a restart), an operation
    reconnects once and runs again. The password comes from the URL given through
    ``VLROUTE_TELEMETRY_URL`` or from libpq's ``PGPASSWORD`` / ``.pgpass``."""

    real = "DOUBLE PRECISION"

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
        # workers starting together: one creates the tables, the others wait for it
        self._tx(self._migrate, lock="vlroute-schema")

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self.url, connect_timeout=10, autocommit=True)
        except self._psycopg.OperationalError as exc:
            raise ConfigError(f"telemetry database {_redact(self.url)}: cannot connect "
                              f"({str(exc).strip()}).") from None

    def _has_table(self, q: Query, name: str) -> bool:
        return q.all("SELECT to_regclass(?)", (name,))[0][0] is not None

    def _tx(self, fn: Callable[[Query], T], *, write: bool = True,
            lock: str | None = None) -> T:
        with self._lock:
            try:
                return self._once(fn, lock)
            except self._psycopg.OperationalError:
                if not self._db.closed:    # the server is up and said no: not a lost link
                    raise
                self._db = self._connect()  # the server restarted: reconnect once, retry
                return self._once(fn, lock)

    def _once(self, fn: Callable[[Query], T], lock: str | None) -> T:
        with self._db.transaction():
            if lock is not None:
                self._db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
            return fn(_PostgresQuery(self._db))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _redact(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':')[0]}:***@{tail}" if ":" in user else url

