"""The OpenAI-compatible gateway: ``create_app(config)`` builds it. Its state
(:class:`~vlroute.serve.gateway.Gateway`) is made in the lifespan; a chat request is the
pipeline of :mod:`vlroute.serve.pipeline`. Every error reply, whatever raised it, is the
OpenAI error envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import inspect
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from vlroute import __version__
from vlroute.errors import VlrouteError
from vlroute.serve.config import GatewayConfig
from vlroute.serve.gateway import Gateway, ReloadRefused
from vlroute.serve.openapi import CHAT_BODY, FEEDBACK_BODY
from vlroute.serve.pipeline import chat, check_headers, decide, error, read_body, session_key
from vlroute.serve.requests import RequestError
from vlroute.serve.routing import RoutingEngine
from vlroute.serve.telemetry import TelemetryStore, open_store
from vlroute.serve.upstream import AiohttpTransport, Transport, close_quietly

_KINDS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          429: "rate_limit_error", 503: "service_unavailable_error"}


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
        loop = asyncio.get_running_loop()
        hup = _on_sighup(loop, gateway)
        background = (asyncio.create_task(gateway.background())
                      if gateway.shared_dir is not None else None)
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            if background is not None:
                background.cancel()
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
        code = "service_unavailable" if exc.status == 503 else None
        return error(exc.status, str(exc), _KINDS.get(exc.status, "invalid_request_error"),
                     exc.param, code)

    @app.exception_handler(VlrouteError)
    async def _vlroute_error(_: Request, exc: VlrouteError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail),
                     _KINDS.get(exc.status_code, "invalid_request_error"))

    @app.exception_handler(Exception)
    async def _any_error(_: Request, exc: Exception) -> JSONResponse:
        # a bug of ours: the client still gets the envelope, never a plain-text page
        return error(500, f"internal error ({type(exc).__name__}); the request was not "
                     "completed.", "api_error", code="internal_error")

    def gw(request: Request) -> Gateway:
        out: Gateway = request.app.state.gateway
        return out

    @app.post("/v1/chat/completions", openapi_extra=CHAT_BODY)
    async def chat_completions(request: Request) -> Response:
        return await chat(gw(request), request)

    @app.post("/v1/route", openapi_extra=CHAT_BODY)
    async def route(request: Request) -> JSONResponse:
        g = gw(request)
        key = g.key_id(request)
        session = session_key(key, check_headers(request, config.limits.max_header_bytes))
        body = await read_body(request, config.limits.max_body_bytes)
        engine = g.engine
        plan = await decide(g, engine, body, session, request.headers.get("x-vlroute-task"))
        decision = plan.decision
        if decision is None:
            return JSONResponse({"model": plan.model, "scenario": "direct",
                                 "predicted": {}, "route_ms": 0.0})
        return JSONResponse({"model": decision.chosen, "fallback_order": decision.order,
                             "router_model": engine.backends[decision.chosen].router_model,
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
        body = await read_body(request, 65536)
        rid, value = body.get("request_id"), body.get("score")
        if not isinstance(rid, str) or not isinstance(value, int | float) \
                or isinstance(value, bool) or not 0 <= value <= 1:
            raise RequestError("feedback needs 'request_id' (string) and 'score' in [0, 1].")
        if not await g.recorder.call(g.store.feedback, rid, float(value)):
            raise RequestError(f"unknown request_id {rid[:80]!r}.", status=404,
                               param="request_id")
        return JSONResponse({"ok": True})

    @app.post("/admin/reload")
    async def reload(request: Request) -> JSONResponse:
        """Load the bundle again (or ``{"artifact": PATH}``) in every worker; a bundle that
        cannot be served is refused (409) and the current one keeps serving."""
        g = gw(request)
        g.admin_id(request)
        raw = await request.body()
        if len(raw) > 65536:
            raise RequestError("request body is over the limit of 65536 bytes.", status=413)
        body = await read_body(request, 65536) if raw.strip() else {}
        artifact = body.get("artifact")
        if artifact is not None and not isinstance(artifact, str):
            raise RequestError("'artifact' must be a path (string).", param="artifact")
        if artifact is not None and ("\x00" in artifact or len(artifact) > 4096):
            raise RequestError("'artifact' is not a usable path.", param="artifact")
        path = Path(artifact) if artifact else None
        try:
            routing = await g.reload(path)
        except ReloadRefused as exc:
            return error(409, f"reload refused, the current bundle keeps serving: {exc}",
                         code="reload_refused")
        g.ask_workers_to_reload(path)
        return JSONResponse({"reloaded": True, "reloads": g.reloads, "routing": routing})

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        g = gw(request)
        up = set(g.available())
        return JSONResponse({
            "status": "ok" if up else "degraded", "routing": g.engine.describe(),
            "router": type(g.engine.router).__name__ if g.engine.router is not None
            else "training-free", "reloads": g.reloads,
            "reload_refused": g.reload_error is not None,
            "backends": {n: {"up": n in up, "breaker": s.breaker.state(),
                             "failures": s.failures, "in_flight": s.in_flight,
                             "latency_s": s.latency_s, "last_error": s.last_error}
                         for n, s in g.states.items()}})

    @app.get("/metrics")
    async def metrics(request: Request) -> PlainTextResponse:
        g = gw(request)
        source = g.shared or g.metrics
        return PlainTextResponse(source.render(*g.gauges()))

    return app


def _on_sighup(loop: asyncio.AbstractEventLoop, gateway: Gateway) -> bool:
    """SIGHUP reloads the bundle (main thread only: tests run apps in other threads)."""
    def reload() -> None:
        async def run() -> None:
            with contextlib.suppress(ReloadRefused):       # reload_error says why
                await gateway.reload()

        task = loop.create_task(run())
        gateway.tasks.add(task)                       # keep it until it ends
        task.add_done_callback(gateway.tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        return False
    return True


__all__ = ["create_app", "error"]
