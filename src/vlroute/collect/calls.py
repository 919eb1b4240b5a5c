"""One chat call to an OpenAI-compatible backend, measured: time to first token (streamed),
total latency, usage, and retries with backoff on 429, 5xx, timeouts, broken connections
and malformed answers. Other 4xx answers are final (a wrong key or model id does not get
better by asking again).

Every attempt that may have been processed, and so billed, is kept in
:attr:`CallResult.charged` with its usage when the answer had believable usage: any 200
answer (whole, malformed or cut), a 5xx / 408 / 409 / 425, a timeout or a connection broken
after the request was sent. Not kept: a connection that never opened, a 429 and other 4xx
answers (the server refused the request before working on it)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from vlroute.serve.config import Backend
from vlroute.serve.upstream import (
    Transport,
    UpstreamError,
    headers_for,
    retry_wait,
    token_counts,
)

#: statuses worth retrying
RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass
class CallResult:
    """What one call (with its retries) gave."""

    status: int | None = None
    error: str | None = None
    text: str | None = None
    tokens: tuple[int, int] | None = None
    ttft_s: float | None = None
    latency_s: float | None = None
    attempts: int = 0
    retried: list[str] = field(default_factory=list)
    #: one entry per attempt that may be billed: its (prompt, completion) usage, or None
    charged: list[tuple[int, int] | None] = field(default_factory=list)
    #: whether the request may have reached the server (False: it never connected)
    reached: bool = True
    headers: dict[str, str] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """A 200 with an answer."""
        return self.status == 200 and self.error is None and self.text is not None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: ``retries`` more attempts, exponential backoff from
    ``base_s`` (doubling, at most ``max_wait_s``), or the wait a 429 asks for (capped)."""

    retries: int = 4
    base_s: float = 0.5
    max_wait_s: float = 30.0

    def wait(self, attempt: int, headers: Any = None) -> float:
        if headers is not None:
            return min(retry_wait(headers, attempt), self.max_wait_s)
        return min(self.base_s * 2.0 ** attempt, self.max_wait_s)


async def chat(transport: Transport, backend: Backend, payload: bytes, *, stream: bool,
               policy: RetryPolicy, headers: dict[str, str] | None = None) -> CallResult:
    """Send ``payload`` (a chat body) to ``backend`` until it answers or the retries run
    out; the result of the last attempt, with what was retried."""
    url = f"{backend.base_url}/chat/completions"
    headers = headers or headers_for(backend)
    result = CallResult()
    for attempt in range(policy.retries + 1):
        retried, charged = result.retried, result.charged
        if result.error is not None:
            retried = [*retried, result.error]
        result = await _attempt(transport, url, payload, headers, backend.timeout_s, stream)
        if billable(result):
            charged = [*charged, result.tokens]
        result.attempts, result.retried, result.charged = attempt + 1, retried, charged
        if result.ok or not _retryable(result) or attempt == policy.retries:
            break
        await asyncio.sleep(policy.wait(attempt, result.headers if result.status == 429
                                        else None))
    return result


def billable(result: CallResult) -> bool:
    """Whether an attempt may have been processed (and billed) by the server."""
    if result.status is None:
        return result.reached
    return result.status == 200 or result.status >= 500 or result.status in (408, 409, 425)


def _retryable(result: CallResult) -> bool:
    return result.status is None or result.status in RETRYABLE or result.status == 200


async def _attempt(transport: Transport, url: str, payload: bytes, headers: dict[str, str],
                   timeout_s: float, stream: bool) -> CallResult:
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    # one deadline per attempt (no task per call, unlike wait_for): ``timeout_s`` for the
    # answer's head, then moved on for the body (a stream may take 4 x ``timeout_s``)
    deadline = asyncio.timeout(timeout_s)
    response: Any = None
    try:
        async with deadline:
            try:
                response = await transport.post(url, payload, headers, timeout_s)
            except (UpstreamError, TimeoutError) as exc:
                # aiohttp's connect errors (ClientConnectorError, ...): never sent
                return CallResult(error=f"no answer: {type(exc).__name__} {exc}".strip(),
                                  reached="Connector" not in str(exc))
            try:
                if response.status != 200:
                    body = await response.read()
                    return CallResult(status=response.status,
                                      error=f"HTTP {response.status}: {_message(body)}",
                                      headers=dict(response.headers))
                kind = response.headers.get("content-type", "")
                if stream and "text/event-stream" in kind:
                    deadline.reschedule(loop.time() + timeout_s * 4)
                    return await _read_stream(response, start)
                deadline.reschedule(loop.time() + timeout_s)
                return _from_json(await response.read(), start)
            except UpstreamError as exc:
                return CallResult(status=200, error=f"broken answer: {type(exc).__name__}")
            finally:
                with contextlib.suppress(Exception):
                    response.release()
    except TimeoutError:
        # the deadline passed: before the head arrived (no answer) or while reading it
        if response is None:
            return CallResult(error="no answer: TimeoutError")
        return CallResult(status=200, error="broken answer: TimeoutError")


def _message(body: bytes) -> str:
    import orjson

    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = orjson.loads(body).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:300]
    return body[:300].decode("utf-8", "replace")


def _from_json(body: bytes, start: float) -> CallResult:
    import orjson

    latency = time.perf_counter() - start
    try:
        doc = orjson.loads(body)
        text = doc["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return CallResult(status=200, error="malformed answer: not an OpenAI chat completion",
                          latency_s=latency)
    if not isinstance(text, str):
        return CallResult(status=200, error="malformed answer: no text content",
                          latency_s=latency)
    return CallResult(status=200, text=text, tokens=token_counts(doc.get("usage")),
                      latency_s=latency)


#: one whole SSE ``data:`` line (ended by ``\n`` or ``\r\n``; a line cut off by the end of
#: the stream is not taken)
_DATA = re.compile(rb"^data:([^\r\n]*)\r?\n", re.MULTILINE)


async def _read_stream(response: Any, start: float) -> CallResult:
    """Read a streamed answer whole, noting when each piece arrived, then parse it once: the
    time to first token is the arrival of the piece that completed the first event with
    content (as if each event had been parsed on arrival, at a fraction of the work)."""
    chunks: list[bytes] = []
    ends: list[int] = []
    arrived: list[float] = []
    size = 0
    async for chunk in response.chunks():
        chunks.append(chunk)
        size += len(chunk)
        ends.append(size)
        arrived.append(time.perf_counter())
    latency = time.perf_counter() - start
    return parse_stream(b"".join(chunks), ends, arrived, start, latency)


def parse_stream(body: bytes, ends: list[int], arrived: list[float], start: float,
                 latency: float) -> CallResult:
    """The :class:`CallResult` of a whole SSE body; ``ends[i]`` is the offset where piece
    ``i`` ended and ``arrived[i]`` the time it arrived."""
    import orjson

    matches = list(_DATA.finditer(body))
    lines = [m.group(1) for m in matches]
    kept = [k for k, line in enumerate(lines) if line.strip() != b"[DONE]"]
    data = [lines[k] for k in kept]
    try:
        docs = orjson.loads(b"[" + b",".join(data) + b"]")
    except orjson.JSONDecodeError:
        docs = None
    if docs is None or len(docs) != len(data):
        # one line is not JSON, or a line held several values: find out which
        try:
            docs = [orjson.loads(line) for line in data]
        except orjson.JSONDecodeError:
            return CallResult(status=200, error="malformed answer: a stream event is "
                              "not JSON")
    pieces: list[str] = []
    tokens = None
    first = -1
    for k, doc in enumerate(docs):
        if not isinstance(doc, dict):
            continue
        if doc.get("error"):
            return CallResult(status=200, error=f"stream error: {doc['error']}"[:300])
        delta = _delta(doc)
        if delta:
            if first < 0:
                first = matches[kept[k]].end()
            pieces.append(delta)
        if doc.get("usage") is not None:
            tokens = token_counts(doc["usage"])
    if len(data) == len(lines):
        return CallResult(status=200, error="broken answer: the stream ended before [DONE]",
                          latency_s=latency)
    return CallResult(status=200, text="".join(pieces), tokens=tokens,
                      ttft_s=_arrival(first, ends, arrived, start), latency_s=latency)


def _arrival(end: int, ends: list[int], arrived: list[float], start: float) -> float | None:
    """When the piece that held body offset ``end`` (the end of the first event with
    content; -1: none had content) had arrived, from ``start``."""
    if end < 0:
        return None
    piece = min(bisect.bisect_left(ends, end), len(arrived) - 1)
    return arrived[piece] - start


def _delta(doc: Any) -> str:
    try:
        content = doc["choices"][0]["delta"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""


__all__ = ["RETRYABLE", "CallResult", "RetryPolicy", "billable", "chat", "headers_for"]
