"""Calls to the backends with fallback: connect errors, timeouts and 5xx before the first byte
move on to the next backend; 429 gets a bounded retry with backoff first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from vlroute.serve.config import Backend


@dataclass
class BackendState:
    """What the gateway has seen of one backend (moving-average latency, failures)."""

    latency_s: float | None = None
    failures: int = 0
    successes: int = 0
    last_error: str | None = None

    def ok(self, seconds: float) -> None:
        self.successes += 1
        self.failures = 0
        self.latency_s = seconds if self.latency_s is None else \
            0.8 * self.latency_s + 0.2 * seconds

    def failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error


@dataclass
class Attempt:
    """The outcome of trying the backends in order."""

    backend: str | None = None
    response: httpx.Response | None = None
    path: list[dict[str, Any]] = field(default_factory=list)
    ttft_ms: float | None = None


def _request(client: httpx.AsyncClient, backend: Backend, body: dict[str, Any]
             ) -> httpx.Request:
    headers = {"content-type": "application/json"}
    key = backend.api_key()
    if key:
        headers["authorization"] = f"Bearer {key}"
    return client.build_request("POST", f"{backend.base_url}/chat/completions",
                                json={**body, "model": backend.model}, headers=headers,
                                timeout=backend.timeout_s)


async def call(client: httpx.AsyncClient, backends: list[Backend], body: dict[str, Any],
               states: dict[str, BackendState], *, stream: bool, retries_429: int
               ) -> Attempt:
    """Send ``body`` to the first backend that answers; the response of a streamed call is
    open (headers read, body not) and must be closed by the caller."""
    attempt = Attempt()
    for backend in backends:
        for retry in range(retries_429 + 1):
            start = time.perf_counter()
            try:
                response = await client.send(_request(client, backend, body), stream=True)
            except httpx.TransportError as exc:    # connect error, timeout, protocol error
                states[backend.name].failed(type(exc).__name__)
                attempt.path.append({"backend": backend.name, "error": type(exc).__name__})
                break
            if response.status_code == 429 and retry < retries_429:
                await response.aclose()
                attempt.path.append({"backend": backend.name, "status": 429})
                await asyncio.sleep(min(0.1 * 2 ** retry, 1.0))
                continue
            if response.status_code >= 500 or response.status_code == 429:
                await response.aclose()
                states[backend.name].failed(f"HTTP {response.status_code}")
                attempt.path.append({"backend": backend.name, "status": response.status_code})
                break
            attempt.ttft_ms = (time.perf_counter() - start) * 1e3
            if not stream:
                try:
                    await response.aread()
                except httpx.TransportError as exc:
                    states[backend.name].failed(type(exc).__name__)
                    attempt.path.append({"backend": backend.name,
                                         "error": type(exc).__name__})
                    break
                finally:
                    await response.aclose()
            states[backend.name].ok(time.perf_counter() - start)
            attempt.path.append({"backend": backend.name, "status": response.status_code})
            attempt.backend, attempt.response = backend.name, response
            return attempt
    return attempt


async def passthrough(response: httpx.Response) -> AsyncIterator[bytes]:
    """The upstream body, chunk by chunk (content-encoding undone), unchanged otherwise;
    closes the response at the end."""
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    finally:
        await response.aclose()
