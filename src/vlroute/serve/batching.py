"""Routing predictions for concurrent requests, computed together.

Encoders cost much less per request in a batch (MiniLM on one core: 12 ms for one text, 52 ms
for sixteen), so requests that arrive while a batch is being encoded wait for the next one,
all on one worker thread off the event loop. A batch that fails is retried one request at a
time, so one bad request cannot fail its neighbours. Each request names the engine it routes
with, so a hot reload's new bundle and the old one's last requests never share a batch. The
queue is bounded: past :data:`MAX_PENDING` waiting requests a new one gets a 503.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vlroute.scenarios import Scenario
from vlroute.serve.requests import Prompt, RequestError
from vlroute.serve.routing import RoutingEngine

#: requests encoded together at most
MAX_BATCH = 32
#: requests waiting for a batch at most (each holds its decoded images)
MAX_PENDING = 2048

_Item = tuple[RoutingEngine, Prompt, Scenario, "asyncio.Future[np.ndarray]"]


class PredictionBatcher:
    """``await predict(engine, prompt, scenario)`` -> the router's per-model predictions."""

    def __init__(self, max_batch: int = MAX_BATCH, max_pending: int = MAX_PENDING) -> None:
        self.max_batch, self.max_pending = max_batch, max_pending
        self._pending: list[_Item] = []
        self._worker: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlroute-route")
        self.batches = 0

    async def predict(self, engine: RoutingEngine, prompt: Prompt, scenario: Scenario
                      ) -> np.ndarray:
        if len(self._pending) >= self.max_pending:
            raise RequestError(f"the routing queue is full ({self.max_pending} requests "
                               "waiting); try again shortly.", status=503, param="queue")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((engine, prompt, scenario, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await asyncio.shield(future)

    def _next_batch(self) -> list[_Item]:
        """The oldest waiting requests of one engine, at most ``max_batch``."""
        engine = self._pending[0][0]
        n = 0
        while n < min(self.max_batch, len(self._pending)) and self._pending[n][0] is engine:
            n += 1
        batch = self._pending[:n]
        del self._pending[:n]
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = self._next_batch()
            self.batches += 1
            engine = batch[0][0]
            try:
                rows = await loop.run_in_executor(
                    self._thread, engine.router_rows, [p for _, p, _, _ in batch],
                    [s for _, _, s, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    if not batch[0][3].done():
                        batch[0][3].set_exception(exc)
                    continue
                for item in batch:          # one at a time: only the culprit fails
                    await self._one(item, loop)
                continue
            for (_, _, _, future), row in zip(batch, rows, strict=True):
                if not future.done():
                    future.set_result(row)

    async def _one(self, item: _Item, loop: asyncio.AbstractEventLoop) -> None:
        engine, prompt, scenario, future = item
        try:
            row = (await loop.run_in_executor(self._thread, engine.router_rows,
                                              [prompt], [scenario]))[0]
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(row)

    async def close(self) -> None:
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
        self._thread.shutdown(wait=True)
