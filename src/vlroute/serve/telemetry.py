"""Recording what the gateway does: :class:`Recorder` commits request rows to a store
(:mod:`vlroute.serve.stores`: SQLite or PostgreSQL, chosen by the telemetry URL).

A row is committed before the response leaves the gateway (non-streamed) or when the stream
ends, so a crash cannot lose the row of an answered request. The recorder commits the rows of
concurrent requests together (group commit) on one writer thread, so the event loop never
waits on the database and a busy gateway pays one commit per batch, not per request. When the
database does not take a batch (SQLite locked past its busy timeout, PostgreSQL down), the
rows go to a spool file (fsynced) and the answers leave; the spool is replayed first at the
next write that succeeds. A request that needs the database before its call (a budget hold,
a session pin) gets a 503 while it is unavailable. Prompts are stored only when the operator
opts in (``telemetry.store_prompts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from vlroute.serve.metrics import process_alive
from vlroute.serve.requests import RequestError
from vlroute.serve.stores import (
    PostgresStore,
    SQLiteStore,
    TelemetryStore,
    open_store,
    sqlite_path,
)

__all__ = ["PostgresStore", "Recorder", "SQLiteStore", "Spool", "StoreUnavailable",
           "TelemetryStore", "open_store", "sqlite_path"]


#: spooled rows are offered to the database again at most this often
REPLAY_EVERY_S = 5.0


class StoreUnavailable(RequestError):
    """The telemetry database did not answer in time (locked, or down): a 503 for a request
    that needs it before its call (budget hold, session pin); rows are spooled instead."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(f"the gateway's database is unavailable ({type(exc).__name__}); "
                         "try again shortly.", status=503, param="database")


class Spool:
    """Rows the database could not take, appended (and fsynced) to a JSON-lines file of this
    process (``BASE.<pid>.jsonl``), so that the answer can leave without losing its row;
    replayed into the database before the next rows it takes, with the files that exited
    workers left behind (inserts are idempotent by request id)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.path = base.with_name(f"{base.name}.{os.getpid()}.jsonl")

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
            handle.flush()
            os.fsync(handle.fileno())

    def files(self) -> list[Path]:
        """This process's spool and those of processes that have exited."""
        out = []
        for path in self.base.parent.glob(f"{self.base.name}.*.jsonl"):
            pid = path.name.removeprefix(f"{self.base.name}.").removesuffix(".jsonl")
            if path == self.path or (pid.isdigit() and not process_alive(int(pid))):
                out.append(path)
        return out

    def replay(self, store: TelemetryStore) -> int:
        """Write the spooled rows to ``store`` and remove their files; how many."""
        done = 0
        for path in self.files():
            rows = []
            for line in path.read_bytes().splitlines():
                with contextlib.suppress(ValueError):    # a torn last line: crash mid-append
                    rows.append(orjson.loads(line))
            store.write(rows)
            path.unlink()
            done += len(rows)
        return done


class Recorder:
    """``await record(row)`` returns once the row is committed, or spooled when the database
    does not take it in time. Every store call runs on one writer thread, never on the event
    loop, with group commit: rows that arrive while a commit runs go in the next."""

    def __init__(self, store: TelemetryStore, spool: Path | None = None) -> None:
        self.store = store
        self.spool = Spool(spool) if spool is not None else None
        self.spooled = 0
        # spool files of this process or of exited ones: replayed with the first write
        self._spooled_here = self.spool is not None and bool(self.spool.files())
        self._next_replay = 0.0
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlroute-telemetry")

    async def record(self, row: dict[str, Any]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await asyncio.shield(future)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        """On the writer thread: spooled rows first (at most every REPLAY_EVERY_S, and never
        in the way of new rows), then these; a batch the database refuses is retried row by
        row, so one bad row cannot take its neighbours with it, and what still fails goes to
        the spool (the store has waited its busy timeout)."""
        if self.spool is None:
            self.store.write(rows)
            return
        now = time.monotonic()
        if self._spooled_here and now >= self._next_replay:
            self._next_replay = now + REPLAY_EVERY_S
            try:
                self.spool.replay(self.store)
                self._spooled_here = False
            except Exception:       # still unavailable: the spool waits
                pass
        try:
            self.store.write(rows)
            return
        except Exception:
            if len(rows) == 1:
                failed = rows
            else:
                failed = []
                for row in rows:
                    try:
                        self.store.write([row])
                    except Exception:
                        failed.append(row)
        if failed:
            self.spool.add(failed)
            self.spooled += len(failed)
            self._spooled_here = True
            self._next_replay = min(self._next_replay, now + REPLAY_EVERY_S)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await loop.run_in_executor(self._thread, self._write,
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
        """Run another store method on the writer thread (after the rows already queued
        there); a database that does not answer is a 503 (:class:`StoreUnavailable`)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except RequestError:
            raise
        except Exception as exc:
            if _unavailable(exc):
                raise StoreUnavailable(exc) from exc
            raise

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        self._thread.shutdown(wait=True)


def _unavailable(exc: Exception) -> bool:
    """A database that is locked, busy or unreachable (not a bug of ours)."""
    return type(exc).__name__ in ("OperationalError", "DatabaseError", "InterfaceError") \
        or isinstance(exc, OSError)
