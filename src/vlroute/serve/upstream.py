"""Calls to the backends with fallback: connect errors, timeouts and 5xx before the first byte
move on to the next backend; 429 gets a bounded retry first, after the wait the backend asks
for (``Retry-After``, ``retry-after-ms``) or an exponential backoff, unless it asks for more
than the gateway will wait, when the next backend gets the request at once; a backend at its
``max_concurrency`` is passed over while another candidate is left, else waited for. A stream
is committed to only once its first chunk has arrived: a stream that breaks, stalls past the
timeout, ends empty or opens with an error event before that falls back too, since nothing
has reached the client yet. A 400 / 413 that says the prompt is over the backend's context
length moves on to the next backend too (edge models have short contexts).

The wire goes through a :class:`Transport`: :class:`AiohttpTransport` in production (a pooled
keep-alive client, several times faster than httpx under load), a scripted one in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from vlroute.serve.breaker import Breaker
from vlroute.serve.config import Backend

#: the last chunks of a stream kept, to find its usage event (a few hundred bytes each)
TAIL_CHUNKS = 4


class UpstreamError(Exception):
    """The backend could not be reached or stopped answering (connect error, timeout, broken
    connection); the message names the kind."""


class UpstreamResponse(Protocol):
    """An open response: status and headers read, body not yet."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class Transport(Protocol):
    async def post(self, url: str, payload: bytes, headers: dict[str, str],
                   timeout_s: float) -> UpstreamResponse: ...

    async def close(self) -> None: ...


class _AiohttpResponse:
    def __init__(self, response: Any) -> None:
        self._r = response
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        import aiohttp

        try:
            return bytes(await self._r.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(type(exc).__name__) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for chunk in self._r.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(type(exc).__name__) from exc

    def release(self) -> None:
        self._r.release()


class AiohttpTransport:
    """One pooled aiohttp session for every backend (created inside the running loop)."""

    def __init__(self) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            auto_decompress=True, skip_auto_headers=("User-Agent",))

    async def post(self, url: str, payload: bytes, headers: dict[str, str],
                   timeout_s: float) -> UpstreamResponse:
        aiohttp = self._aiohttp
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        try:
            response = await self._session.post(url, data=payload, headers=headers,
                                                timeout=timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(type(exc).__name__) from exc
        return _AiohttpResponse(response)

    async def close(self) -> None:
        await self._session.close()


@dataclass
class BackendState:
    """What the gateway has seen of one backend (moving-average latency, its circuit
    breaker, and the slots of its ``max_concurrency``)."""

    limit: int = 64
    latency_s: float | None = None
    successes: int = 0
    last_error: str | None = None
    breaker: Breaker = field(default_factory=Breaker)
    slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.limit)

    @property
    def in_flight(self) -> int:
        return self.limit - self.slots._value

    @property
    def failures(self) -> int:
        """Failures in a row."""
        return self.breaker.failures

    def ok(self, seconds: float) -> None:
        self.successes += 1
        self.breaker.success()
        self.latency_s = seconds if self.latency_s is None else \
            0.8 * self.latency_s + 0.2 * seconds

    def failed(self, error: str) -> None:
        self.breaker.failure()
        self.last_error = error


@dataclass
class Attempt:
    """The outcome of trying the backends in order. ``response`` is open for a stream (the
    caller relays and releases it, and gives back ``slot``); for a JSON call ``content`` holds
    the body and the slot is already given back."""

    backend: str | None = None
    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""
    response: UpstreamResponse | None = None
    first: bytes = b""                                   # a stream's first chunk, read ahead
    rest: AsyncIterator[bytes] | None = None             # and the chunks after it
    tail: deque[bytes] = field(default_factory=lambda: deque(maxlen=TAIL_CHUNKS))
    slot: asyncio.Semaphore | None = None
    path: list[dict[str, Any]] = field(default_factory=list)
    ttft_ms: float | None = None
    #: a relayed stream broke after its headers went out (the client got a cut answer)
    broken: str | None = None
    #: chunks relayed to the client (a stream's partial cost when it breaks)
    relayed: int = 0
    #: the backends the request was posted to, in order (retries included)
    sent: list[str] = field(default_factory=list)


def encode(body: dict[str, Any], model: str) -> bytes:
    """The request body for the backend: the client's, with the backend's model id."""
    import orjson

    return orjson.dumps({**body, "model": model})


def headers_for(backend: Backend) -> dict[str, str]:
    """Request headers, with the backend's key from its environment variable."""
    headers = {"content-type": "application/json"}
    key = backend.api_key()
    if key:
        headers["authorization"] = f"Bearer {key}"
    return headers


async def _slot(state: BackendState, last: bool, timeout_s: float) -> bool:
    """Take a concurrency slot: at once, or (the last candidate) waiting up to the timeout."""
    if not state.slots.locked():
        await state.slots.acquire()
        return True
    if not last:
        return False
    try:
        await asyncio.wait_for(state.slots.acquire(), timeout_s)
    except TimeoutError:
        return False
    return True


async def call(transport: Transport, backends: list[Backend], body: dict[str, Any],
               states: dict[str, BackendState], *, stream: bool, retries_429: int,
               max_wait_429_s: float = 2.0, attempt: Attempt | None = None) -> Attempt:
    """Send ``body`` to the first backend that answers; ``attempt`` (optional) is filled in
    as it goes, so a caller that cancels the call still sees where the request was sent."""
    attempt = attempt if attempt is not None else Attempt()
    for n, backend in enumerate(backends):
        state = states[backend.name]
        admitted = state.breaker.admit()
        if admitted is None:
            attempt.path.append({"backend": backend.name, "error": "circuit open"})
            continue
        probe = admitted == "probe"
        try:
            got = await _slot(state, n == len(backends) - 1, backend.timeout_s)
        except BaseException:              # cancelled while waiting: free the probe
            if probe:
                state.breaker.abandon()
            raise
        if not got:
            if probe:
                state.breaker.abandon()
            attempt.path.append({"backend": backend.name, "error": "busy"})
            continue
        payload = encode(body, backend.model)
        url = f"{backend.base_url}/chat/completions"
        keep = False
        outcome = False                   # the breaker heard how this backend did
        try:
            for retry in range(retries_429 + 1):
                start = time.perf_counter()
                attempt.sent.append(backend.name)
                try:
                    response = await transport.post(url, payload, headers_for(backend),
                                                    backend.timeout_s)
                except UpstreamError as exc:
                    state.failed(str(exc))
                    outcome = True
                    attempt.path.append({"backend": backend.name, "error": str(exc)})
                    break
                wait = retry_wait(response.headers, retry) if response.status == 429 else 0.0
                if response.status == 429 and retry < retries_429 and wait <= max_wait_429_s:
                    response.release()
                    attempt.path.append({"backend": backend.name, "status": 429})
                    await asyncio.sleep(wait)
                    continue
                if response.status >= 500 or response.status in UNHEALTHY:
                    # 5xx, 429 after its retries, and 401 / 403 / 404: the backend cannot
                    # answer (a wrong key or URL is the operator's, not the client's): the
                    # next candidate gets the request, nothing is billed
                    response.release()
                    state.failed(f"HTTP {response.status}")
                    outcome = True
                    attempt.path.append({"backend": backend.name, "status": response.status})
                    break
                if response.status in (400, 413) and n < len(backends) - 1:
                    # the prompt may only be too long for this backend (a small edge model's
                    # context): then the next one gets it; any other 4xx is the answer
                    try:
                        attempt.content = await response.read()
                    except UpstreamError:
                        attempt.content = b""
                    finally:
                        response.release()
                    if context_exceeded(attempt.content):
                        attempt.path.append({"backend": backend.name,
                                             "status": response.status,
                                             "error": "context length exceeded"})
                        attempt.content = b""
                        break
                    attempt.ttft_ms = (time.perf_counter() - start) * 1e3
                elif stream:
                    chunks = response.chunks()
                    try:
                        problem = await _first_chunk(chunks, attempt)
                    except BaseException:       # cancelled (the client left): close it
                        response.release()
                        raise
                    if problem is not None:
                        await _close(chunks)
                        response.release()
                        state.failed(problem)
                        outcome = True
                        attempt.path.append({"backend": backend.name, "error": problem})
                        break
                    attempt.ttft_ms = (time.perf_counter() - start) * 1e3
                    attempt.response, attempt.rest, attempt.slot = response, chunks, state.slots
                    keep = True
                else:
                    attempt.ttft_ms = (time.perf_counter() - start) * 1e3
                    try:
                        attempt.content = await response.read()
                    except UpstreamError as exc:
                        state.failed(str(exc))
                        outcome = True
                        attempt.path.append({"backend": backend.name, "error": str(exc)})
                        break
                    finally:
                        response.release()
                state.ok(time.perf_counter() - start)
                outcome = True
                attempt.path.append({"backend": backend.name, "status": response.status})
                attempt.backend, attempt.status = backend.name, response.status
                attempt.headers = response.headers
                return attempt
        finally:
            if probe and not outcome:    # cancelled, or a 400 passed on: free its probe
                state.breaker.abandon()
            if not keep:
                state.slots.release()
    return attempt


#: backend statuses that mean "this backend cannot answer": fall back, count a failure
UNHEALTHY = (401, 403, 404, 429)


def retry_wait(headers: Mapping[str, str], retry: int) -> float:
    """Seconds to wait before retrying a 429: what the backend asks for (``retry-after-ms``,
    or ``Retry-After`` in seconds or as an HTTP date), else 0.1 s doubling per retry, at most
    1 s."""
    ms = headers.get("retry-after-ms")
    with contextlib.suppress(TypeError, ValueError):
        if ms is not None and float(ms) >= 0:
            return float(ms) / 1e3
    after = headers.get("retry-after")
    if after is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(after))
        with contextlib.suppress(TypeError, ValueError, IndexError):
            when = email.utils.parsedate_to_datetime(after)
            return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    return min(0.1 * 2.0 ** retry, 1.0)


#: how OpenAI, vLLM, llama.cpp, Ollama and others word "the prompt is too long for me"
CONTEXT_ERRORS = (b"context length", b"context_length", b"context window", b"maximum context",
                  b"too many tokens", b"exceeds the context", b"prompt is too long",
                  b"input is too long", b"context size")


def context_exceeded(body: bytes) -> bool:
    """Whether an error body says the prompt is longer than the backend's context."""
    head = body[:4096].lower()
    return any(pattern in head for pattern in CONTEXT_ERRORS)


async def _first_chunk(chunks: AsyncIterator[bytes], attempt: Attempt) -> str | None:
    """Read a stream's first chunk into ``attempt.first``; what is wrong with it, if any."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        return "empty stream"
    except UpstreamError as exc:
        return f"{exc} before the first chunk"
    error = _error_event(first)
    if error is not None:
        return f"stream opened with an error: {error}"
    attempt.first = first
    return None


def stream_usage(attempt: Attempt) -> tuple[int, int] | None:
    """(prompt, completion) tokens from a relayed stream's usage event, which OpenAI-compatible
    servers send last when asked (``stream_options: {"include_usage": true}``); None when
    the stream's end has none."""
    import orjson

    for event in reversed(b"".join(attempt.tail).split(b"\n\n")):
        event = event.strip()
        if not event.startswith(b"data:") or b'"usage"' not in event:
            continue
        try:
            usage = orjson.loads(event[5:]).get("usage")
        except (ValueError, AttributeError, TypeError):
            continue
        checked = token_counts(usage)
        if checked is not None:
            return checked
    return None


#: the most tokens one call is believed to use (a larger count is a broken usage report)
MAX_TOKENS_PER_CALL = 10_000_000


def token_counts(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of an OpenAI ``usage`` object, or None when it is missing
    or not believable (absent fields, non-integers, negative or absurd counts): then the
    gateway books its estimate, never $0 and never a credit."""
    if not isinstance(usage, dict):
        return None
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or value != value or not 0 <= value <= MAX_TOKENS_PER_CALL \
                or int(value) != value:
            return None
        counts.append(int(value))
    return counts[0], counts[1]


def _error_event(chunk: bytes) -> str | None:
    """The message of an SSE error event (``data: {"error": ...}``) opening ``chunk``: how
    vLLM and other servers report a failure after a 200."""
    head = chunk.lstrip()
    if not head.startswith(b"data:") or b'"error"' not in head[:256]:
        return None                        # the common case, without parsing
    import orjson

    try:
        event = orjson.loads(head[5:].split(b"\n\n", 1)[0])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or "error" not in event or "choices" in event:
        return None
    error = event["error"]
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:200]


async def _close(chunks: AsyncIterator[bytes]) -> None:
    closer = getattr(chunks, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


async def relay(attempt: Attempt) -> AsyncIterator[bytes]:
    """A streamed upstream body, chunk by chunk, unchanged (the first was read ahead);
    releases the response and the backend's slot at the end (also when the client goes
    away)."""
    rest, tail = attempt.rest, attempt.tail
    assert rest is not None
    try:
        tail.append(attempt.first)
        attempt.relayed += 1
        yield attempt.first
        async for chunk in rest:
            tail.append(chunk)                # the end may carry the usage: see stream_usage
            attempt.relayed += 1
            yield chunk
    except UpstreamError as exc:
        # the headers are out: end the stream where it broke, and say so in telemetry
        attempt.broken = f"stream cut mid-way: {exc}"
        return
    finally:
        await release(attempt)


async def release(attempt: Attempt) -> None:
    """Give back an open stream: its chunk reader, its response and its backend slot (safe
    to call twice)."""
    if attempt.rest is not None:
        rest, attempt.rest = attempt.rest, None
        await _close(rest)
    if attempt.response is not None:
        attempt.response.release()
    if attempt.slot is not None:
        attempt.slot.release()
        attempt.slot = None


async def close_quietly(transport: Transport) -> None:
    with contextlib.suppress(Exception):
        await transport.close()
