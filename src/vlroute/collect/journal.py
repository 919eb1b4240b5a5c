"""An append-only journal of calls, fsynced in groups: what makes collect and judge resumable.

Each line is one JSON object: ``{"event": "start", "key": K}`` when a call is sent, and
``{"event": "done", "key": K, ...result}`` once its result is known. A result counts as
recorded once its line is fsynced (:meth:`Journal.commit`, which batches the fsyncs of all
the lines written meanwhile, so concurrency does not multiply them). Lines are written to a
file opened for appending, a ``start`` at once and a result either at once
(:meth:`Journal.record`) or with the next commit (:meth:`Journal.hold`, one ``write`` for the
group), so a killed process loses no line it wrote; an OS crash may lose the lines after the
last fsync. A line torn by a crash is cut off when the
journal is opened again. A ``start`` without its ``done`` is a call that was in flight when the
run stopped: it is made again, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlroute.errors import DataError


class JournalError(DataError):
    """A journal line that is not a JSON object (other than a torn last line), or a journal
    another process is writing."""


class Journal:
    """The journal at ``path`` (created if absent): what is done, what was in flight.

    Attributes
    ----------
    done : dict[str, dict]
        The last ``done`` entry of each key.
    in_flight : set[str]
        Keys started but never done in earlier runs.
    replaced : list[dict]
        ``done`` entries a later ``done`` of the same key replaced (a call made again).
    lost : list[dict]
        ``start`` entries never followed by their ``done`` (calls in flight at a stop; a
        key started twice before its ``done`` has lost its first call).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.done: dict[str, dict[str, Any]] = {}
        self.in_flight: set[str] = set()
        self.replaced: list[dict[str, Any]] = []
        self.lost: list[dict[str, Any]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:                     # one writer at a time: a second run would repeat calls
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise JournalError(f"{self.path}: another process is writing this journal (a "
                               "run of the same folder still going); wait for it or stop "
                               "it.") from None
        self._read()
        self._written = self._synced = 0
        self._syncing: asyncio.Future[None] | None = None
        self._held: list[bytes] = []

    def _read(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):                      # a torn last line: cut it off
            with self.path.open("r+b") as handle:
                handle.truncate(end)
        pending: dict[str, dict[str, Any]] = {}
        for number, raw in enumerate(data[:end].splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
                key, event = entry["key"], entry["event"]
            except (ValueError, KeyError, TypeError):
                raise JournalError(f"{self.path}, line {number}: not a journal entry; "
                                   "expected a JSON object with 'event' and 'key'.") from None
            if event == "start":
                if key in pending:
                    self.lost.append(pending[key])
                pending[key] = entry
            elif event == "done":
                if key in self.done:
                    self.replaced.append(self.done[key])
                self.done[key] = entry
                pending.pop(key, None)
        self.lost.extend(pending.values())
        self.in_flight = set(pending)

    def write(self, entry: dict[str, Any]) -> None:
        """Append one entry (one ``write``; durable once :meth:`commit` returns)."""
        os.write(self._fd, _dumps(entry) + b"\n")
        self._written += 1

    def start(self, key: str, **extra: Any) -> None:
        """Note that the call ``key`` is being sent (with ``extra`` fields)."""
        self.write({"event": "start", "key": key, **extra})

    def record(self, key: str, result: dict[str, Any]) -> None:
        """Write the result of ``key`` (a killed process keeps it; durable once
        :meth:`commit` returns)."""
        entry = {"event": "done", "key": key, **result}
        self.write(entry)
        self.done[key] = entry

    def hold(self, key: str, result: dict[str, Any]) -> None:
        """:meth:`record`, but the line is written with the next :meth:`commit` (one
        ``write`` for all the lines held meanwhile): until then a killed process loses it,
        and the call counts as in flight."""
        entry = {"event": "done", "key": key, **result}
        self._held.append(_dumps(entry) + b"\n")
        self.done[key] = entry

    def _flush(self) -> None:
        if self._held:
            lines, self._held = self._held, []
            os.write(self._fd, b"".join(lines))
            self._written += len(lines)

    async def finish(self, key: str, result: dict[str, Any]) -> None:
        """Record the result of ``key`` and wait until it is on disk."""
        self.record(key, result)
        await self.commit()

    async def commit(self) -> None:
        """Write the held lines, then wait until every line written so far is fsynced (one
        fsync serves many)."""
        self._flush()
        target = self._written
        while self._synced < target:
            sync = self._syncing or self._start_sync()
            if sync.done():
                if sync.exception() is not None:
                    raise sync.exception()  # type: ignore[misc]
                await asyncio.sleep(0)             # let its bookkeeping callback run
                continue
            await asyncio.shield(sync)

    def _start_sync(self) -> asyncio.Future[None]:
        upto = self._written
        sync = asyncio.ensure_future(asyncio.to_thread(os.fsync, self._fd))

        def settle(done: asyncio.Future[None]) -> None:
            self._syncing = None
            if not done.cancelled() and done.exception() is None:
                self._synced = max(self._synced, upto)

        sync.add_done_callback(settle)
        self._syncing = sync
        return sync

    def sync(self) -> None:
        """Write the held lines and fsync now (outside an event loop)."""
        self._flush()
        os.fsync(self._fd)
        self._synced = self._written

    def close(self) -> None:
        """Write the held lines, fsync and close."""
        if self._fd >= 0:
            self._flush()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


@contextlib.contextmanager
def lock_run(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock of a run folder (a ``flock`` on the folder itself, so no file
    is added): ``collect`` holds it from planning until its outputs are written, ``judge
    run`` and ``judge reference`` while they read and rewrite ``outcomes.jsonl``, so they
    never interleave. Another holder: :class:`JournalError` at once, not a wait."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise JournalError(f"{folder}: another vlroute collect or judge is writing this "
                               "run folder; wait for it to finish or stop it.") from None
        yield
    finally:
        os.close(fd)                                # closing the descriptor drops the lock


def _dumps(entry: dict[str, Any]) -> bytes:
    try:
        import orjson  # several times faster, and on the hot path
    except ImportError:                       # pragma: no cover - orjson ships with [serve]
        return json.dumps(entry, ensure_ascii=False).encode("utf-8")
    return orjson.dumps(entry)


__all__ = ["Journal", "JournalError", "lock_run"]
