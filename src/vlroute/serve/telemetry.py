"""Recording what the gateway does: :class:`Recorder` commits request rows to a store
(:mod:`vlroute.serve.stores`: SQLite or PostgreSQL, chosen by the telemetry URL).

A row is committed before the response leaves the gateway (non-streamed) or when the stream
ends, so a crash cannot lose the row of an answered request. For PostgreSQL the recorder
commits the rows of concurrent requests together (group commit) on one writer thread, so the
event loop never waits on the network and a busy gateway pays one commit per batch, not per
request. Prompts are stored only when the operator opts in (``telemetry.store_prompts``).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vlroute.serve.stores import (
    PostgresStore,
    SQLiteStore,
    TelemetryStore,
    open_store,
    sqlite_path,
)

__all__ = ["PostgresStore", "Recorder", "SQLiteStore", "TelemetryStore", "open_store",
           "sqlite_path"]


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
        """Run another store method: at once for a local store, else on the writer thread
        (after the rows already queued there)."""
        if self._local:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        self._thread.shutdown(wait=True)
