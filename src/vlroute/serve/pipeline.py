"""One chat request, as a short pipeline: auth -> body -> decide -> reserve -> call ->
respond.

:func:`chat` owns what a request takes: the backend's concurrency slot (held by an open
stream) and the budget hold. One ``try/finally`` gives both back on every path that does not
hand them to a :class:`Stream`, whose own clean-up then does it (also when the client leaves
before the first chunk). Telemetry rows book the cost and drop the hold in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from vlroute.serve.gateway import Gateway
from vlroute.serve.remote_images import fetch_all, image_urls, inline
from vlroute.serve.requests import (
    OUTPUT_TOKENS,
    Prompt,
    RequestError,
    decode_image,
    max_output,
    read_messages,
    task_hint,
)
from vlroute.serve.routing import Decision, RoutingEngine
from vlroute.serve.upstream import Attempt, call, release, stream_usage, token_counts

#: status recorded for a request whose client left before the answer (nginx's convention)
CLIENT_CLOSED = 499
#: the longest x-vlroute-session value taken
MAX_SESSION_CHARS = 256
#: the longest ``model`` value taken (a backend name or a scenario spec)
MAX_MODEL_CHARS = 512
#: images up to this many data-URL characters in all are checked on the event loop
INLINE_IMAGE_CHARS = 1_500_000
#: characters a header value of ours may echo from the client
MAX_ECHO_CHARS = 200


def error(status: int, message: str, kind: str = "invalid_request_error",
          param: str | None = None, code: str | None = None) -> JSONResponse:
    """The OpenAI error envelope."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": code}}, status_code=status)


def header_value(text: str) -> str:
    """``text`` as a safe HTTP header value: printable ASCII, the rest percent-encoded,
    at most :data:`MAX_ECHO_CHARS` characters (client-chosen names end up in headers)."""
    return quote(text, safe=" !#$&'()*+,/:;=?@[]~-._<>{}|^`\"")[:MAX_ECHO_CHARS]


class Stream(StreamingResponse):
    """A relayed stream whose clean-up (slot, budget, telemetry row) also runs when the
    client leaves before the first chunk, where the body generator never starts."""

    def __init__(self, content: AsyncIterator[bytes], finish: Callable[[], Awaitable[None]],
                 **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._finish = finish

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._finish()


@dataclass
class Plan:
    """What the decide step settled: the decision (None: ``model`` names a backend), the
    prompt, the body to send on, and the engine it was made with."""

    decision: Decision | None
    prompt: Prompt
    body: dict[str, Any]
    model: str


def check_headers(request: Request, limit: int) -> str | None:
    """Refuse oversized headers (431); the x-vlroute-session value, checked."""
    size = sum(len(k) + len(v) for k, v in request.scope.get("headers", ()))
    if size > limit:
        raise RequestError(f"request headers of {size} bytes are over the limit of {limit}.",
                           status=431)
    session = request.headers.get("x-vlroute-session")
    if session is not None and not 0 < len(session) <= MAX_SESSION_CHARS:
        raise RequestError(f"x-vlroute-session must be 1 to {MAX_SESSION_CHARS} characters, "
                           f"got {len(session)}.", param="x-vlroute-session")
    return session


def session_key(key: str | None, session: str | None) -> str | None:
    """Conversations are pinned per API key: another key's session of the same name is
    another conversation."""
    if session is None or key is None:
        return session
    return f"{key}\x1f{session}"


def capped(body: dict[str, Any], out_tokens: int, budgeted: bool) -> dict[str, Any]:
    """The body sent on. For a key with a budget, the output cap the hold was sized for is
    what the backend gets (``max_tokens`` and ``max_completion_tokens`` alike, so a backend
    reading either cannot run past the hold), and a stream asks for its usage event, so its
    cost is the backend's count, not an estimate."""
    if not budgeted:
        return body
    out = {**body, "max_tokens": out_tokens}
    if "max_completion_tokens" in body:
        out["max_completion_tokens"] = out_tokens
    if body.get("stream"):
        options = body.get("stream_options")
        out["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                 "include_usage": True}
    return out


async def read_body(request: Request, limit: int) -> dict[str, Any]:
    """The JSON object of the body, read up to ``limit`` bytes (413 beyond)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"request body of {declared} bytes is over the limit of {limit}.",
                           status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RequestError(f"request body is over the limit of {limit} bytes.", status=413)
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise RequestError("request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {type(body).__name__}.")
    return body


async def _prompt(g: Gateway, body: dict[str, Any]) -> tuple[Prompt, dict[str, Any]]:
    config = g.config
    if config.remote_images.enabled and image_urls(body):
        body = inline(body, await fetch_all(body, config, g.image_session))
    text, urls = read_messages(body, config)
    decoded: list[tuple[bytes, tuple[int, int]]] = []
    if sum(map(len, urls)) > INLINE_IMAGE_CHARS:    # milliseconds: off the event loop
        decoded = await run_in_threadpool(lambda: [decode_image(u, config) for u in urls])
    elif urls:      # about 0.2 ms for 200 KB: cheaper than a thread hop
        decoded = [decode_image(u, config) for u in urls]
    return Prompt(text, tuple(d for d, _ in decoded), tuple(s for _, s in decoded)), body


async def decide(g: Gateway, engine: RoutingEngine, body: dict[str, Any],
                 session: str | None, hint: str | None = None) -> Plan:
    """Read the request and choose: a backend named in ``model`` is taken as is; anything
    else is a scenario (``vlroute/auto``: the bundle's) decided among the backends that can
    take the request and are up. ``hint``: the ``x-vlroute-task`` header (``metadata.task``
    in the body works too); hints reach the router and are stripped from the body sent on."""
    model = body.get("model") or g.config.default_scenario
    if not isinstance(model, str) or len(model) > MAX_MODEL_CHARS \
            or any(ord(c) < 32 or ord(c) == 127 for c in model):
        raise RequestError(f"'model' must be a string of at most {MAX_MODEL_CHARS} "
                           "printable characters: a scenario (vlroute/auto, vlroute/quality) "
                           "or a backend name.", param="model")
    task, body = task_hint(hint, body)
    prompt, body = await _prompt(g, body)
    if task is not None:
        prompt = replace(prompt, task=task)
    if model in g.states:
        if prompt.images and not engine.backends[model].vision:
            raise RequestError(f"backend {model!r} is text-only, and the request has "
                               "images.", param="model")
        return Plan(None, prompt, body, model)
    scenario = engine.scenario(model)
    left_out = engine.unfit(prompt, max_output(body))
    if len(left_out) == len(g.states):
        # no window fits by the estimate, which is rough: let the backends judge the size
        left_out = engine.unfit(prompt, max_output(body), context=False)
        if len(left_out) == len(g.states):
            raise RequestError("no backend of this gateway can take this request: " +
                               "; ".join(f"{n}: {why}" for n, why in left_out.items()) + ".",
                               param="messages")
    up = [n for n in g.available() if n not in left_out]
    pinned = await g.pinned(session) if session else None     # (keyed by the API key)
    if pinned in up:
        up = [pinned]
    if not up:
        raise RequestError("no backend is available: every one that could take this request "
                           "is failing (circuit open); try again later.", status=503,
                           param="model")
    latency = {n: s.latency_s for n, s in g.states.items() if s.latency_s is not None}
    start = time.perf_counter()
    row = None
    if engine.needs_router(up):     # encoders + router: batched with concurrent requests
        try:
            row = await g.batcher.predict(engine, prompt, scenario)
        except (OSError, SyntaxError) as exc:    # an image PIL opened but cannot decode
            raise RequestError(f"an image of this request could not be decoded "
                               f"({type(exc).__name__}).", param="image_url") from None
    decision = engine.decide(prompt, scenario, up, latency, row)
    decision.left_out = left_out
    decision.route_ms = (time.perf_counter() - start) * 1e3
    g.metrics.route_seconds.observe(decision.route_ms / 1e3)
    return Plan(decision, prompt, body, model)


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the body is read: nothing else can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(request: Request, work: Awaitable[Attempt]) -> Attempt | None:
    """``work``'s result, or None when the client disconnects first: then ``work`` is
    cancelled where it waits, which closes the upstream connection, so the backend can stop
    generating and its slot is given back. One watcher task, no more: this is the hot path."""
    handler = asyncio.current_task()
    assert handler is not None
    left = False

    async def watch() -> None:
        nonlocal left
        await _client_gone(request)
        left = True
        handler.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not left:            # cancelled from outside (shutdown): not ours to swallow
            raise
        handler.uncancel()
        return None
    finally:
        watcher.cancel()


def _usage(content: bytes) -> tuple[int, int] | None:
    try:
        parsed = orjson.loads(content)
    except ValueError:
        return None
    return token_counts(parsed.get("usage")) if isinstance(parsed, dict) else None


class Booking:
    """The money side of one request: its budget hold, and the cost its row books."""

    def __init__(self, g: Gateway, engine: RoutingEngine, rid: str, key: str | None,
                 prompt: Prompt, out_tokens: int) -> None:
        self.g, self.engine, self.rid, self.key = g, engine, rid, key
        self.prompt, self.out_tokens = prompt, out_tokens
        self.held = False
        self.booked = False

    async def reserve(self, order: list[str]) -> None:
        """Hold the dearest candidate's estimate at the client's max_tokens."""
        engine = self.engine
        self.held = await self.g.budgets.reserve(self.key, self.rid, max(
            engine.estimate_cost(engine.backends[n], self.prompt, self.out_tokens)
            for n in order), dt.datetime.now(dt.UTC))

    def cost(self, backend: str, status: int, usage: tuple[int, int] | None,
             relayed: int | None = None) -> float:
        """USD to book: nothing for a refusal (4xx); the backend's usage at the config's
        prices; else the estimate (a stream cut mid-way: the chunks relayed, one token
        each, at most the estimate's output)."""
        if status >= 400:
            return 0.0
        b = self.engine.backends[backend]
        if usage is not None:
            return (usage[0] * b.price_in_per_1m + usage[1] * b.price_out_per_1m) / 1e6
        out = self.out_tokens if relayed is None else min(relayed, self.out_tokens)
        return self.engine.estimate_cost(b, self.prompt, out)

    async def record(self, row: dict[str, Any]) -> None:
        """Commit the row (which books its cost and drops the hold)."""
        await self.g.recorder.record(row)
        self.booked = True

    async def settle(self) -> None:
        """Drop a hold that no row booked (every exit path runs this)."""
        if self.held and not self.booked:
            self.booked = True
            with contextlib.suppress(Exception):
                await self.g.budgets.release(self.rid)


async def chat(g: Gateway, request: Request) -> Response:
    """``POST /v1/chat/completions``."""
    start = time.perf_counter()
    key = g.key_id(request)                               # auth before the body is read
    session = session_key(key, check_headers(request, g.config.limits.max_header_bytes))
    body = await read_body(request, g.config.limits.max_body_bytes)
    engine = g.engine                        # this request's bundle, even across a reload
    plan = await decide(g, engine, body, session, request.headers.get("x-vlroute-task"))
    decision = plan.decision
    order = decision.order if decision else [plan.model]
    for name in decision.left_out if decision else ():
        g.metrics.per_backend["left_out"][name] += 1
    scenario_name = decision.scenario.name if decision else "direct"
    stream = bool(plan.body.get("stream"))
    rid = f"vlr-{os.urandom(16).hex()}"
    booking = Booking(g, engine, rid, key, plan.prompt, max_output(plan.body) or OUTPUT_TOKENS)
    row: dict[str, Any] = {
        "id": rid, "ts": time.time(), "key_id": key, "scenario": scenario_name,
        "predicted": decision.predicted if decision else {}, "fallback_path": [],
        "route_ms": decision.route_ms if decision else 0.0,
        "prompt": plan.prompt.text if g.config.telemetry.store_prompts else None}
    attempt: Attempt | None = None
    handed_over = False
    await booking.reserve(order)
    sent = capped(plan.body, booking.out_tokens, booking.held)
    progress = Attempt()
    try:
        attempt = await _unless_client_leaves(request, call(
            g.transport, [engine.backends[n] for n in order], sent, g.states,
            stream=stream, retries_429=g.config.limits.max_retries_429,
            max_wait_429_s=g.config.limits.max_wait_429_s, attempt=progress))
        if attempt is None:         # nobody to answer: record it (and drop the hold)
            g.metrics.counters["client_disconnects"] += 1
            # a backend that got the request has read its prompt: that much is booked
            cost = booking.cost(progress.sent[-1], 200, None, relayed=0) if progress.sent \
                else 0.0
            row.update(status=CLIENT_CLOSED, chosen=progress.sent[-1] if progress.sent
                       else None, cost_usd=cost, fallback_path=progress.path,
                       total_ms=(time.perf_counter() - start) * 1e3)
            await booking.record(row)
            return Response(status_code=CLIENT_CLOSED)
        g.metrics.counters["requests"] += 1
        g.metrics.counters["fallbacks"] += max(0, len({p["backend"] for p in attempt.path}) - 1)
        row.update(chosen=attempt.backend, fallback_path=attempt.path, ttft_ms=attempt.ttft_ms)
        if attempt.backend is None:
            row.update(status=502, total_ms=(time.perf_counter() - start) * 1e3)
            await booking.record(row)
            return error(502, f"every candidate backend refused or failed (tried "
                         f"{', '.join(order)}): {attempt.path}", "api_error",
                         code="upstream_unavailable")
        chosen = attempt.backend
        g.metrics.decisions[chosen] += 1
        if attempt.ttft_ms is not None:
            g.metrics.ttft_seconds[chosen].observe(attempt.ttft_ms / 1e3)
        headers = {"x-vlroute-model": header_value(chosen),
                   "x-vlroute-scenario": header_value(scenario_name),
                   "x-vlroute-route-ms": f"{decision.route_ms if decision else 0.0:.3f}",
                   "x-vlroute-request-id": rid}
        if decision:
            headers["x-vlroute-predicted-score"] = f"{decision.predicted.get(chosen, 0):.4f}"
            headers["x-vlroute-est-cost-usd"] = f"{decision.est_cost_usd.get(chosen, 0):.8f}"
        media = header_value(attempt.headers.get("content-type", "application/json"))
        if attempt.rest is None:        # a JSON answer (also a 4xx to a stream request)
            usage = _usage(attempt.content)
            cost = booking.cost(chosen, attempt.status, usage)
            row.update(status=attempt.status, tokens_in=usage[0] if usage else None,
                       tokens_out=usage[1] if usage else None, cost_usd=cost,
                       total_ms=(time.perf_counter() - start) * 1e3)
            await booking.record(row)
            g.metrics.book(chosen, cost, *(usage or (None, None)))
            g.metrics.request_seconds.observe(time.perf_counter() - start)
            if decision and session:
                await _pin(g, session, chosen)
            return Response(attempt.content, status_code=attempt.status, media_type=media,
                            headers=headers)
        if decision and session:
            await _pin(g, session, chosen)
        response = _stream(g, attempt, booking, row, start, headers, media)
        handed_over = True
        return response
    finally:
        if not handed_over:
            if attempt is not None:
                await release(attempt)          # an open stream's reader and slot
            await booking.settle()


async def _pin(g: Gateway, session: str, backend: str) -> None:
    """Pin the conversation to the backend that answered; best effort: the answer is
    already paid for, and a database that cannot take the pin must not lose it (the next
    turn is routed afresh)."""
    with contextlib.suppress(Exception):
        await g.pin(session, backend)


def _stream(g: Gateway, attempt: Attempt, booking: Booking, row: dict[str, Any],
            start: float, headers: dict[str, str], media: str) -> Stream:
    """The relayed stream; its clean-up gives back the slot and books the row once."""
    from vlroute.serve.upstream import relay

    chosen = attempt.backend or ""
    finished = False

    async def finish() -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        try:
            await release(attempt)
            usage = stream_usage(attempt)
            status = attempt.status
            if attempt.broken:              # the client got a cut answer: an error row
                status = 502
                row["fallback_path"] = [*attempt.path, {"backend": chosen,
                                                        "error": attempt.broken}]
            cost = booking.cost(chosen, attempt.status, usage,
                                relayed=attempt.relayed if attempt.broken else None)
            row.update(status=status, cost_usd=cost,
                       tokens_in=usage[0] if usage else None,
                       tokens_out=usage[1] if usage else None,
                       total_ms=(time.perf_counter() - start) * 1e3)
            await booking.record(row)
            g.metrics.book(chosen, cost, *(usage or (None, None)))
            g.metrics.request_seconds.observe(time.perf_counter() - start)
        finally:
            await booking.settle()

    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in relay(attempt):
                yield chunk
        finally:
            await finish()

    return Stream(events(), finish, status_code=attempt.status, media_type=media,
                  headers=headers)
