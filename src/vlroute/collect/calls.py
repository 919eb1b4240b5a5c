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
import contextlib
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
    try:
        async with asyncio.timeout(timeout_s):        # no extra task, unlike wait_for
            response = await transport.post(url, payload, headers, timeout_s)
    except (UpstreamError, TimeoutError) as exc:
        # aiohttp's connect errors (ClientConnectorError, ...): the request was never sent
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
            async with asyncio.timeout(timeout_s * 4):
                return await _read_stream(response, start)
        async with asyncio.timeout(timeout_s):
            body = await response.read()
        return _from_json(body, start)
    except (UpstreamError, TimeoutError) as exc:
        return CallResult(status=200, error=f"broken answer: {type(exc).__name__}")
    finally:
        with contextlib.suppress(Exception):
            response.release()


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


async def _read_stream(response: Any, start: float) -> CallResult:
    import orjson

    pieces: list[str] = []
    ttft = None
    tokens = None
    buffer = b""
    finished = False
    async for chunk in response.chunks():
        buffer += chunk
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            line = event.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                finished = True
                continue
            try:
                doc = orjson.loads(data)
            except ValueError:
                return CallResult(status=200, error="malformed answer: a stream event is "
                                  "not JSON")
            if isinstance(doc, dict) and doc.get("error"):
                return CallResult(status=200, error=f"stream error: {doc['error']}"[:300])
            delta = _delta(doc)
            if delta:
                if ttft is None:
                    ttft = time.perf_counter() - start
                pieces.append(delta)
            if isinstance(doc, dict) and doc.get("usage") is not None:
                tokens = token_counts(doc.get("usage"))
    latency = time.perf_counter() - start
    if not finished:
        return CallResult(status=200, error="broken answer: the stream ended before [DONE]",
                          latency_s=latency)
    return CallResult(status=200, text="".join(pieces), tokens=tokens, ttft_s=ttft,
                      latency_s=latency)


def _delta(doc: Any) -> str:
    try:
        content = doc["choices"][0]["delta"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""


__all__ = ["RETRYABLE", "CallResult", "RetryPolicy", "billable", "chat", "headers_for"]
