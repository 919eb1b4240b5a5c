"""The OpenAI-compatible gateway: ``create_app(config)`` builds it; its state (HTTP client,
routing engine, telemetry store, backend states) lives in the app, created in the lifespan.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import inspect
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from vlroute import __version__
from vlroute.errors import VlrouteError
from vlroute.scenarios import Scenario
from vlroute.serve.batching import PredictionBatcher
from vlroute.serve.budgets import Budgets
from vlroute.serve.config import GatewayConfig, hash_key
from vlroute.serve.metrics import METRICS_DIR_ENV, SHARE_EVERY_S, Metrics, SharedMetrics
from vlroute.serve.openapi import CHAT_BODY, FEEDBACK_BODY
from vlroute.serve.remote_images import fetch_all, image_urls, inline
from vlroute.serve.routing import (
    OUTPUT_TOKENS,
    Decision,
    Prompt,
    RequestError,
    RoutingEngine,
    decode_image,
    max_output,
    read_messages,
)
from vlroute.serve.stores import SESSION_TTL_S
from vlroute.serve.telemetry import Recorder, TelemetryStore, open_store
from vlroute.serve.upstream import (
    AiohttpTransport,
    Attempt,
    BackendState,
    Transport,
    call,
    close_quietly,
    relay,
    release,
    stream_usage,
)

#: a backend with this many failures in a row leaves the candidate set ...
BREAKER_FAILURES = 3
#: ... until this many seconds have passed; then one request probes it
BREAKER_COOLDOWN_S = 30.0
#: status recorded for a request whose client left before the answer (nginx's convention)
CLIENT_CLOSED = 499
#: session pins kept in memory at most (all are in the database); the oldest go first
MAX_SESSIONS = 100_000
#: the longest x-vlroute-session value taken
MAX_SESSION_CHARS = 256
#: images up to this many data-URL characters in all are checked on the event loop
INLINE_IMAGE_CHARS = 1_500_000


def error(status: int, message: str, kind: str = "invalid_request_error",
          param: str | None = None, code: str | None = None) -> JSONResponse:
    """The OpenAI error envelope."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": code}}, status_code=status)


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


class Gateway:
    """Everything a request needs; one per app."""

    def __init__(self, config: GatewayConfig, engine: RoutingEngine, transport: Transport,
                 store: TelemetryStore) -> None:
        self.config, self.engine, self.transport, self.store = config, engine, transport, store
        self.recorder = Recorder(store)
        self.batcher = PredictionBatcher(engine)
        self.image_session: Any = None
        self.states = {b.name: BackendState(b.max_concurrency) for b in config.backends}
        self.opened_at: dict[str, float] = {}
        self.keys = {k.sha256: k.id for k in config.auth_keys}
        self.metrics = Metrics(self.states)
        shared = os.environ.get(METRICS_DIR_ENV)      # set by `vlroute serve --workers N`
        self.shared = SharedMetrics(Path(shared), self.metrics) if shared else None
        self.sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.budgets = Budgets(config.auth_keys, self.recorder)

    async def pinned(self, session: str) -> str | None:
        """The backend ``session`` is pinned to (by any worker), if any."""
        now = time.time()
        found = self.sessions.get(session)
        if found is None or now - found[1] >= SESSION_TTL_S:
            found = await self.recorder.call(self.store.pinned, session, now)
            if found is None:
                self.sessions.pop(session, None)
                return None
            self._remember(session, found)
        return found[0]

    async def pin(self, session: str, backend: str) -> None:
        """Pin a session to its first turn's backend (a race between workers: first wins)."""
        if session not in self.sessions:
            self._remember(session, await self.recorder.call(
                self.store.pin, session, backend, time.time()))

    def _remember(self, session: str, pin: tuple[str, float]) -> None:
        """A pin (backend, since) does not change until it expires: keep the latest in
        memory (the oldest are forgotten first)."""
        self.sessions[session] = pin
        if len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)

    def gauges(self) -> tuple[dict[str, int], set[str]]:
        """In-flight requests per backend, and the backends not cut off."""
        return {n: s.in_flight for n, s in self.states.items()}, set(self.available())

    async def share_metrics(self) -> None:
        """Keep this worker's snapshot fresh for the other workers' scrapes."""
        assert self.shared is not None
        while True:
            self.shared.write(*self.gauges())
            await asyncio.sleep(SHARE_EVERY_S)

    def available(self) -> list[str]:
        """Backends not cut off by their circuit breaker (config order)."""
        now, out = time.monotonic(), []
        for b in self.config.backends:
            if self.states[b.name].failures >= BREAKER_FAILURES:
                opened = self.opened_at.setdefault(b.name, now)
                if now - opened < BREAKER_COOLDOWN_S:
                    continue
                self.opened_at[b.name] = now        # half-open: let this one probe
            else:
                self.opened_at.pop(b.name, None)
            out.append(b.name)
        return out

    def key_id(self, request: Request) -> str | None:
        if not self.keys:
            return None
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        found = self.keys.get(hash_key(token)) if token else None
        if found is None:
            raise RequestError("missing or invalid API key (Authorization: Bearer <key>).",
                               status=401)
        return found


def _session(request: Request) -> str | None:
    """The x-vlroute-session header, checked."""
    session = request.headers.get("x-vlroute-session")
    if session is not None and not 0 < len(session) <= MAX_SESSION_CHARS:
        raise RequestError(f"x-vlroute-session must be 1 to {MAX_SESSION_CHARS} characters, "
                           f"got {len(session)}.", param="x-vlroute-session")
    return session


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


async def _body(request: Request, limit: int) -> dict[str, Any]:
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


def create_app(config: GatewayConfig, *, engine: RoutingEngine | None = None,
               transport: Transport | None = None,
               store: TelemetryStore | None = None) -> FastAPI:
    """The gateway app; ``engine``, ``transport`` and ``store`` are injectable for tests."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        wire = transport or AiohttpTransport()
        gateway = Gateway(config, engine or RoutingEngine.from_config(config), wire,
                          store or open_store(config.telemetry.url))
        if config.remote_images.enabled:
            import aiohttp

            gateway.image_session = aiohttp.ClientSession()
        await run_in_threadpool(gateway.engine.warm_up)
        # what start-up allocated (modules, encoders) stays: keep it out of the collector's
        # full passes, which otherwise stall the loop for tens of ms under load (p99)
        gc.collect()
        gc.freeze()
        app.state.gateway = gateway
        sharing = asyncio.create_task(gateway.share_metrics()) if gateway.shared else None
        try:
            yield
        finally:
            if sharing is not None:
                sharing.cancel()
            await gateway.recorder.close()
            await gateway.batcher.close()
            await close_quietly(wire)
            if gateway.image_session is not None:
                await gateway.image_session.close()
            if store is None:
                gateway.store.close()

    extra: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI).parameters:
        # FastAPI >= 0.16x wraps every request in OpenTelemetry hooks, unused here (the
        # gateway records its own telemetry) and about a tenth of the pass-through time
        extra["telemetry"] = {"tracing": False, "metrics": False, "logs": False,
                              "operation_spans": False}
    app = FastAPI(title="vlroute gateway", version=__version__, lifespan=lifespan, **extra)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        kind = "authentication_error" if exc.status == 401 else "invalid_request_error"
        return error(exc.status, str(exc), kind, exc.param)

    @app.exception_handler(VlrouteError)
    async def _vlroute_error(_: Request, exc: VlrouteError) -> JSONResponse:
        return error(400, str(exc))

    def gw(request: Request) -> Gateway:
        out: Gateway = request.app.state.gateway
        return out

    async def _decide(g: Gateway, request: Request, body: dict[str, Any]
                      ) -> tuple[Decision | None, Prompt, str | None, dict[str, Any]]:
        """The decision (None: ``model`` names a backend), the prompt, the key id and the
        body to send on (remote images inlined as data URLs)."""
        key = g.key_id(request)
        model = body.get("model") or config.default_scenario
        if not isinstance(model, str):
            raise RequestError("'model' must be a string: a scenario (vlroute/quality) or a "
                               "backend name.", param="model")
        if config.remote_images.enabled and image_urls(body):
            body = inline(body, await fetch_all(body, config, g.image_session))
        text, urls = read_messages(body, config)
        decoded: list[tuple[bytes, tuple[int, int]]] = []
        if sum(map(len, urls)) > INLINE_IMAGE_CHARS:    # milliseconds: off the event loop
            decoded = await run_in_threadpool(lambda: [decode_image(u, config) for u in urls])
        elif urls:      # about 0.2 ms for 200 KB: cheaper than a thread hop
            decoded = [decode_image(u, config) for u in urls]
        images = tuple(d for d, _ in decoded)
        prompt = Prompt(text, images, tuple(s for _, s in decoded))
        if model in g.states:
            if images and not g.engine.backends[model].vision:
                raise RequestError(f"backend {model!r} is text-only, and the request has "
                                   f"images.", param="model")
            return None, prompt, key, body
        scenario = config.scenario(model)
        left_out = g.engine.unfit(prompt, max_output(body))
        if len(left_out) == len(g.states):
            # no window fits by the estimate, which is rough: let the backends judge the size
            left_out = g.engine.unfit(prompt, max_output(body), context=False)
            if len(left_out) == len(g.states):
                raise RequestError("no backend of this gateway can take this request: " +
                                   "; ".join(f"{n}: {why}" for n, why in left_out.items()) +
                                   ".", param="messages")
        up = [n for n in g.available() if n not in left_out]
        session = _session(request)
        pinned = await g.pinned(session) if session else None
        if pinned in up:
            up = [pinned]
        latency = {n: s.latency_s for n, s in g.states.items() if s.latency_s is not None}
        if g.engine.router is None:     # training-free: microseconds, stay on the loop
            decision = g.engine.decide(prompt, scenario, up, latency)
            decision.left_out = left_out
            g.metrics.route_seconds.observe(decision.route_ms / 1e3)
            return decision, prompt, key, body
        if not up:
            raise RequestError("no backend is available (all are failing); try again later.",
                               status=503)
        start = time.perf_counter()     # encoders + router: batched with concurrent requests
        row = await g.batcher.predict(prompt, scenario)
        decision = g.engine.decide(prompt, scenario, up, latency, row)
        decision.left_out = left_out
        decision.route_ms = (time.perf_counter() - start) * 1e3
        g.metrics.route_seconds.observe(decision.route_ms / 1e3)
        return decision, prompt, key, body

    @app.post("/v1/chat/completions", openapi_extra=CHAT_BODY)
    async def chat(request: Request) -> Response:
        g = gw(request)
        start = time.perf_counter()
        body = await _body(request, config.limits.max_body_bytes)
        decision, prompt, key, body = await _decide(g, request, body)
        order = decision.order if decision else [str(body["model"])]
        for name in decision.left_out if decision else ():
            g.metrics.per_backend["left_out"][name] += 1
        scenario_name = decision.scenario.name if decision else "direct"
        stream = bool(body.get("stream"))
        backends = [g.engine.backends[n] for n in order]
        # the hold covers the dearest candidate at the client's max_tokens (the estimate's
        # output otherwise); held until the request's row books its cost (every path does)
        out_tokens = max_output(body) or OUTPUT_TOKENS
        rid = f"vlr-{os.urandom(16).hex()}"
        held = await g.budgets.reserve(key, rid, max(
            g.engine.estimate_cost(b, prompt, out_tokens) for b in backends),
            dt.datetime.now(dt.UTC))
        try:
            attempt = await _unless_client_leaves(request, call(
                g.transport, backends, body, g.states, stream=stream,
                retries_429=config.limits.max_retries_429,
                max_wait_429_s=config.limits.max_wait_429_s))
        except BaseException:
            if held:
                await g.budgets.release(rid)
            raise
        if attempt is None:         # nobody to answer: record it (and drop the hold)
            g.metrics.counters["client_disconnects"] += 1
            await g.recorder.record({
                "id": rid, "ts": time.time(), "key_id": key, "scenario": scenario_name,
                "predicted": decision.predicted if decision else {}, "fallback_path": [],
                "status": CLIENT_CLOSED, "total_ms": (time.perf_counter() - start) * 1e3})
            return Response(status_code=CLIENT_CLOSED)
        g.metrics.counters["requests"] += 1
        g.metrics.counters["fallbacks"] += max(0, len({p["backend"] for p in attempt.path}) - 1)
        row = {"id": rid, "ts": time.time(), "key_id": key, "scenario": scenario_name,
               "chosen": attempt.backend, "predicted": decision.predicted if decision else {},
               "fallback_path": attempt.path, "ttft_ms": attempt.ttft_ms,
               "route_ms": decision.route_ms if decision else 0.0,
               "prompt": prompt.text if config.telemetry.store_prompts else None}
        if attempt.backend is None:
            row.update(status=502, total_ms=(time.perf_counter() - start) * 1e3)
            await g.recorder.record(row)
            return error(502, f"no backend answered (tried {', '.join(order)}): "
                         f"{attempt.path}", "api_error", code="upstream_unavailable")
        g.metrics.decisions[attempt.backend] += 1
        if attempt.ttft_ms is not None:
            g.metrics.ttft_seconds[attempt.backend].observe(attempt.ttft_ms / 1e3)
        if decision:
            session = _session(request)
            if session:
                await g.pin(session, attempt.backend or "")
        chosen = attempt.backend or ""
        headers = {"x-vlroute-model": chosen, "x-vlroute-scenario": scenario_name,
                   "x-vlroute-route-ms": f"{decision.route_ms if decision else 0.0:.3f}",
                   "x-vlroute-request-id": rid}
        if decision:
            headers["x-vlroute-predicted-score"] = f"{decision.predicted.get(chosen, 0):.4f}"
            headers["x-vlroute-est-cost-usd"] = f"{decision.est_cost_usd.get(chosen, 0):.8f}"
        media = attempt.headers.get("content-type", "application/json")
        if attempt.rest is None:        # a JSON answer (also a 4xx to a stream request)
            usage = _usage(attempt.content)
            cost = _cost(config, chosen, usage)
            row.update(status=attempt.status, tokens_in=usage[0], tokens_out=usage[1],
                       cost_usd=cost, total_ms=(time.perf_counter() - start) * 1e3)
            await g.recorder.record(row)
            g.metrics.book(chosen, cost, *usage)
            g.metrics.request_seconds.observe(time.perf_counter() - start)
            return Response(attempt.content, status_code=attempt.status, media_type=media,
                            headers=headers)

        finished = False

        async def finish() -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            await release(attempt)
            # the usage event, when the client asked for one; else book the estimate
            usage = stream_usage(attempt)
            cost = _cost(config, chosen, usage) if usage is not None else \
                g.engine.estimate_cost(g.engine.backends[chosen], prompt, out_tokens)
            if usage is not None:
                row.update(tokens_in=usage[0], tokens_out=usage[1])
            row.update(status=attempt.status, cost_usd=cost,
                       total_ms=(time.perf_counter() - start) * 1e3)
            await g.recorder.record(row)
            g.metrics.book(chosen, cost, *(usage or (None, None)))
            g.metrics.request_seconds.observe(time.perf_counter() - start)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for chunk in relay(attempt):
                    yield chunk
            finally:
                await finish()

        return Stream(events(), finish, status_code=attempt.status, media_type=media,
                      headers=headers)

    @app.post("/v1/route", openapi_extra=CHAT_BODY)
    async def route(request: Request) -> JSONResponse:
        g = gw(request)
        body = await _body(request, config.limits.max_body_bytes)
        decision, _, _, _ = await _decide(g, request, body)
        if decision is None:
            return JSONResponse({"model": body["model"], "scenario": "direct",
                                 "predicted": {}, "route_ms": 0.0})
        return JSONResponse({"model": decision.chosen, "fallback_order": decision.order,
                             "scenario": decision.scenario.name,
                             "scenario_spec": decision.scenario.spec(),
                             "predicted": decision.predicted,
                             "est_cost_usd": decision.est_cost_usd,
                             "left_out": decision.left_out,
                             "route_ms": decision.route_ms})

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        gw(request).key_id(request)
        data = [{"id": f"vlroute/{name}", "object": "model", "owned_by": "vlroute"}
                for name in config.scenario_names()]
        data += [{"id": b.name, "object": "model", "owned_by": b.tier}
                 for b in config.backends]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/v1/budget")
    async def budget(request: Request) -> JSONResponse:
        """The calling key's spend budgets: limit, spent, held by requests in flight, left."""
        g = gw(request)
        key = g.key_id(request)
        if key is None:
            raise RequestError("budgets belong to API keys, and auth is off (no auth_keys).",
                               status=404)
        return JSONResponse({"key": key, "budgets": await g.budgets.status(
            key, dt.datetime.now(dt.UTC))})

    @app.post("/v1/feedback", openapi_extra=FEEDBACK_BODY)
    async def feedback(request: Request) -> JSONResponse:
        g = gw(request)
        g.key_id(request)
        body = await _body(request, 65536)
        rid, value = body.get("request_id"), body.get("score")
        if not isinstance(rid, str) or not isinstance(value, int | float) \
                or isinstance(value, bool) or not 0 <= value <= 1:
            raise RequestError("feedback needs 'request_id' (string) and 'score' in [0, 1].")
        if not await g.recorder.call(g.store.feedback, rid, float(value)):
            raise RequestError(f"unknown request_id {rid!r}.", status=404, param="request_id")
        return JSONResponse({"ok": True})

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        g = gw(request)
        up = set(g.available())
        return JSONResponse({"status": "ok" if up else "degraded", "router": type(
            g.engine.router).__name__ if g.engine.router is not None else "training-free",
            "backends": {n: {"up": n in up, "failures": s.failures, "in_flight": s.in_flight,
                             "latency_s": s.latency_s, "last_error": s.last_error}
                         for n, s in g.states.items()}})

    @app.get("/metrics")
    async def metrics(request: Request) -> PlainTextResponse:
        g = gw(request)
        source = g.shared or g.metrics
        return PlainTextResponse(source.render(*g.gauges()))

    return app


def _cost(config: GatewayConfig, backend: str, usage: tuple[int, int]) -> float:
    """USD of a call from its token usage and the backend's prices."""
    b = next(b for b in config.backends if b.name == backend)
    return (usage[0] * b.price_in_per_1m + usage[1] * b.price_out_per_1m) / 1e6


def _usage(content: bytes) -> tuple[int, int]:
    try:
        usage = orjson.loads(content).get("usage") or {}
        return int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    except (ValueError, AttributeError, TypeError):
        return 0, 0


__all__ = ["Scenario", "create_app", "error"]
