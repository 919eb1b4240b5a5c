"""The gateway's state, one per app: routing engine (swapped whole on reload), backend
states, telemetry recorder, budgets, session pins, metrics and the prediction batcher."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from vlroute.errors import VlrouteError
from vlroute.serve.batching import PredictionBatcher
from vlroute.serve.budgets import Budgets
from vlroute.serve.config import GatewayConfig, hash_key
from vlroute.serve.metrics import METRICS_DIR_ENV, SHARE_EVERY_S, Metrics, SharedMetrics
from vlroute.serve.requests import RequestError
from vlroute.serve.routing import RoutingEngine
from vlroute.serve.stores import SESSION_TTL_S
from vlroute.serve.telemetry import Recorder, TelemetryStore
from vlroute.serve.upstream import BackendState, Transport

#: session pins kept in memory at most (all are in the database); the oldest go first
MAX_SESSIONS = 100_000
#: the file in the workers' shared directory that asks every worker to reload
RELOAD_FILE = "reload.json"


class ReloadRefused(VlrouteError):
    """A reload's bundle cannot be served; the current one keeps serving."""


class Gateway:
    """Everything a request needs; one per app."""

    def __init__(self, config: GatewayConfig, engine: RoutingEngine, transport: Transport,
                 store: TelemetryStore) -> None:
        self.config, self.engine, self.transport, self.store = config, engine, transport, store
        self.recorder = Recorder(store, spool=config.telemetry.spool_base())
        self.batcher = PredictionBatcher()
        self.image_session: Any = None
        self.states = {b.name: BackendState(b.max_concurrency) for b in config.backends}
        self.keys = {k.sha256: k.id for k in config.auth_keys}
        self.admin = {k.sha256: k.id for k in config.admin_keys}
        self.metrics = Metrics(self.states)
        shared = os.environ.get(METRICS_DIR_ENV)      # set by `vlroute serve --workers N`
        self.shared_dir = Path(shared) if shared else None
        self.shared = SharedMetrics(self.shared_dir, self.metrics) if self.shared_dir else None
        self.sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.budgets = Budgets(config.auth_keys, self.recorder)
        self.reloads = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.reload_error: str | None = None
        self._reload_lock = asyncio.Lock()
        # 0: a worker (re)started after a reload follows it at its first background tick
        self._generation_seen = 0

    # -- routing state ---------------------------------------------------------------------

    def available(self) -> list[str]:
        """Backends a request may be routed to: breaker closed, or half-open with its probe
        free (config order). Reading it changes nothing."""
        now = time.monotonic()
        return [b.name for b in self.config.backends
                if self.states[b.name].breaker.routable(now)]

    def gauges(self) -> tuple[dict[str, int], set[str]]:
        """In-flight requests per backend, and the backends not cut off (no side effect)."""
        return {n: s.in_flight for n, s in self.states.items()}, set(self.available())

    async def reload(self, artifact: Path | None = None) -> dict[str, Any]:
        """Load the bundle again (or ``artifact``) with its encoders, off the event loop, and
        swap it in: requests already routing keep the engine they started with. A bundle
        that cannot be served raises, and the current one keeps serving."""
        async with self._reload_lock:
            try:
                engine = await run_in_threadpool(self._load_engine, artifact)
            except Exception as exc:            # whatever is wrong with it: refuse it
                message = str(exc) if isinstance(exc, VlrouteError) else \
                    f"{type(exc).__name__}: {exc}"
                self.reload_error = message
                raise ReloadRefused(message) from exc
            self.engine, self.reloads, self.reload_error = engine, self.reloads + 1, None
            return self.engine.describe()

    def _load_engine(self, artifact: Path | None) -> RoutingEngine:
        engine = RoutingEngine.from_config(self.config, artifact, required=True)
        engine.warm_up()
        return engine

    # -- reloads across workers ------------------------------------------------------------

    def _generation(self) -> int:
        if self.shared_dir is None:
            return 0
        try:
            return int(json.loads((self.shared_dir / RELOAD_FILE).read_text())["generation"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def ask_workers_to_reload(self, artifact: Path | None) -> None:
        """Tell every other worker to reload (they check every second)."""
        if self.shared_dir is not None:
            self._generation_seen = request_reload(self.shared_dir, artifact)

    async def follow_reloads(self) -> None:
        """Reload when another worker (or SIGHUP to ``vlroute serve``) asked for it."""
        assert self.shared_dir is not None
        generation = self._generation()
        if generation == self._generation_seen:
            return
        self._generation_seen = generation
        try:
            doc = json.loads((self.shared_dir / RELOAD_FILE).read_text())
            await self.reload(Path(doc["artifact"]) if doc.get("artifact") else None)
        except Exception:                   # reload_error says why,
            pass                            # and the old bundle keeps serving

    async def background(self) -> None:
        """Every second: share this worker's metrics and follow reload requests."""
        while True:
            if self.shared is not None:
                self.shared.write(*self.gauges())
            if self.shared_dir is not None:
                await self.follow_reloads()
            await asyncio.sleep(SHARE_EVERY_S)

    # -- keys and sessions -----------------------------------------------------------------

    def key_id(self, request: Request) -> str | None:
        """The calling API key's id (None with auth off); a 401 when missing or wrong."""
        return _lookup(self.keys, request, "API key") if self.keys else None

    def admin_id(self, request: Request) -> str:
        """The admin key's id; 403 when no admin key is configured, 401 when wrong."""
        if not self.admin:
            raise RequestError("admin endpoints are off: no admin_keys in the gateway config "
                               "(SIGHUP to `vlroute serve` reloads too).", status=403)
        return _lookup(self.admin, request, "admin key")

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
        self.sessions[session] = pin
        if len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)


def request_reload(shared_dir: Path, artifact: Path | None) -> int:
    """Ask every worker sharing ``shared_dir`` to reload (``artifact``, or its configured
    bundle); the new generation number."""
    path = shared_dir / RELOAD_FILE
    with (shared_dir / "reload.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # two reloads at once get two generations
        try:
            generation = int(json.loads(path.read_text())["generation"]) + 1
        except (OSError, ValueError, KeyError, TypeError):
            generation = 1
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"generation": generation,
                                   "artifact": str(artifact) if artifact else None}))
        os.replace(tmp, path)
    return generation


def _lookup(keys: dict[str, str], request: Request, kind: str) -> str:
    """The id of the bearer token's key among ``keys`` (SHA-256 -> id); a 401 otherwise."""
    token = _bearer(request)
    found = keys.get(hash_key(token)) if token else None
    if found is None:
        raise RequestError(f"missing or invalid {kind} (Authorization: Bearer <key>).",
                           status=401)
    return found


def _bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
