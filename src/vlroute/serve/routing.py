"""Routing decisions over the configured backends (pure and synchronous: the app runs the
encoders and the router off the event loop).

With a serving bundle (:mod:`vlroute.routers.bundle`), the bundle's encoders turn a
:class:`Prompt` into features, its router predicts each model's quality (or P(solved), or
policy scores), and :meth:`Bundle.decide` chooses among the bundle's candidates whose backends
are up: the decision rule ``vlroute eval --artifact`` measured, with the bundle's costs and
cost bounds. ``vlroute/auto`` is the bundle's own scenario. Backends the bundle does not know
come after its candidates in the fallback order. Without a bundle, each backend's
``prior_quality`` and the config's prices decide.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from vlroute.errors import VlrouteError
from vlroute.scenarios import AUTO, PRESETS, Scenario
from vlroute.serve.config import Backend, ConfigError, GatewayConfig
from vlroute.serve.requests import OUTPUT_TOKENS, Prompt, RequestError, prompt_tokens

if TYPE_CHECKING:
    from vlroute.routers.bundle import Bundle


@dataclass
class Decision:
    """The chosen backend, the order to fall back in, and what they were based on."""

    scenario: Scenario
    order: list[str]
    predicted: dict[str, float]
    est_cost_usd: dict[str, float]
    route_ms: float = 0.0
    #: backends that could not take the request at all, with why (text-only, context)
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def chosen(self) -> str:
        return self.order[0]


def _digest(prompt: Prompt) -> bytes:
    text = prompt.text.encode("utf-8", "surrogatepass")
    h = hashlib.blake2b(len(text).to_bytes(8, "little"), digest_size=20)
    h.update(text)
    for image in prompt.images:
        h.update(len(image).to_bytes(8, "little"))
        h.update(image)
    return h.digest()


class RoutingEngine:
    """Predictions and decisions over the configured backends, with or without a bundle."""

    def __init__(self, config: GatewayConfig, bundle: Bundle | None = None,
                 encoders: dict[str, Any] | None = None,
                 fusion: tuple[str, float] = ("normalize_concat", 0.5)) -> None:
        self.config = config
        self.bundle = bundle
        self.encoders = encoders or {}
        self.fusion = fusion
        #: the token encoder of an end-to-end router's bundle (None: fused feature rows)
        self.token_encoder: Any = None
        #: what computes the features: torch, onnx-fp32 or onnx-int8
        self.runtime = "torch"
        self.backends = {b.name: b for b in config.backends}
        self.cache_size = config.router.cache_size
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        models = bundle.models if bundle is not None else ()
        #: backend name -> the bundle's model column it serves (backends the bundle knows)
        self.column = {b.name: models.index(b.router_model) for b in config.backends
                       if b.router_model in models}

    @property
    def router(self) -> Any:
        """The bundle's router (None without a bundle)."""
        return self.bundle.router if self.bundle is not None else None

    @classmethod
    def from_config(cls, config: GatewayConfig, artifact: Path | None = None, *,
                    required: bool = False) -> RoutingEngine:
        """Load the bundle (``artifact``, default the config's) and its encoders; without
        one (none set, or the folder is absent: ``vlroute demo`` not run yet) routing uses
        each backend's prior quality. A bundle the gateway cannot serve (a baseline, no
        serving section, other features than the configured encoders, no candidate among the
        backends) is refused with a ConfigError that says why; with ``required`` (a reload)
        so is a missing one."""
        artifact = artifact if artifact is not None else config.router.artifact
        if artifact is None or not (Path(artifact) / "router.json").is_file():
            if required:        # a reload: a missing bundle is a mistake, not a choice
                raise ConfigError(f"no serving bundle at {artifact} (no router.json there).")
            return cls(config)
        from vlroute.routers.bundle import load_bundle
        from vlroute.routers.persistence import artifact_metadata
        from vlroute.serve.edge import feature_encoders

        try:
            trained = artifact_metadata(Path(artifact)).get("feature_spec") or {}
        except VlrouteError as exc:
            raise ConfigError(f"cannot serve router artifact: {exc}") from None
        if trained.get("kind") == "tokens":        # an end-to-end router: token features
            if config.router.runtime == "onnx":
                raise ConfigError(f"router artifact {artifact} is an end-to-end router (token "
                                  "features through a torch transformer): runtime: onnx "
                                  "cannot serve it; use runtime: torch.")
            return cls._token_engine(config, Path(artifact), trained)
        encoders, runtime = feature_encoders(config.router, Path(artifact))
        for kind in ("text", "image"):
            have = encoders[kind].encoder_id if kind in encoders else None
            if trained.get(kind) != have:
                raise ConfigError(f"router artifact {artifact} was trained on {kind} features "
                                  f"{trained.get(kind)!r}; the config's {kind}_encoder gives "
                                  f"{have!r}.")
        try:
            bundle = load_bundle(Path(artifact), feature_spec=trained)
        except VlrouteError as exc:
            raise ConfigError(f"cannot serve router artifact: {exc}") from None
        served = [b.name for b in config.backends if b.router_model in bundle.candidates]
        if not served:
            raise ConfigError(
                f"router artifact {artifact} chooses among {', '.join(bundle.candidates)}; no "
                "backend names one of them as its router_model.")
        engine = cls(config, bundle, encoders,
                     fusion=(trained.get("fusion", "normalize_concat"),
                             float(trained.get("text_weight", 0.5))))
        engine.runtime = runtime
        return engine

    @classmethod
    def _token_engine(cls, config: GatewayConfig, artifact: Path, trained: dict[str, Any]
                      ) -> RoutingEngine:
        """An engine for a bundle trained on token features: the config's text and image
        encoders name the towers, whose token ids must be the bundle's."""
        from vlroute.errors import UnknownComponentError
        from vlroute.features.tokens import make_token_encoder, states_of
        from vlroute.routers.bundle import load_bundle

        try:       # the text states (last or penultimate layer) are the bundle's
            encoder = make_token_encoder(config.router.text_encoder,
                                         config.router.image_encoder,
                                         states_of(str(trained.get("text", ""))))
        except UnknownComponentError as exc:
            raise ConfigError(f"router artifact {artifact} reads token features: {exc}") \
                from None
        for kind, have in (("text", encoder.text_id), ("image", encoder.image_id)):
            if trained.get(kind) != have:
                raise ConfigError(f"router artifact {artifact} was trained on {kind} tokens "
                                  f"{trained.get(kind)!r}; the config's {kind}_encoder gives "
                                  f"{have!r}.")
        try:
            bundle = load_bundle(artifact, feature_spec=trained)
        except VlrouteError as exc:
            raise ConfigError(f"cannot serve router artifact: {exc}") from None
        if not any(b.router_model in bundle.candidates for b in config.backends):
            raise ConfigError(
                f"router artifact {artifact} chooses among {', '.join(bundle.candidates)}; no "
                "backend names one of them as its router_model.")
        engine = cls(config, bundle)
        engine.token_encoder = encoder
        return engine

    def describe(self) -> dict[str, Any]:
        """What ``/health`` says of routing."""
        if self.bundle is None:
            return {"mode": "priors", "note": "no serving bundle loaded: each backend's "
                    "prior_quality and the config's prices decide; vlroute/auto is the "
                    "quality preset"}
        described = {k: v for k, v in self.bundle.describe().items() if k != "path"}
        return {"mode": "bundle", **described, "runtime": self.runtime,
                "backends": {n: self.bundle.models[k] for n, k in self.column.items()}}

    def scenario(self, name: str) -> Scenario:
        """A scenario by request name: ``auto`` is the bundle's (the ``quality`` preset on
        priors without one); else presets, configured and inline scenarios."""
        key = name.removeprefix("vlroute/")
        if key == AUTO:
            if self.bundle is not None:
                return self.bundle.resolve(Scenario(AUTO, cost_weight=0.0))
            return PRESETS["quality"].with_params(name=AUTO)
        return self.config.scenario(key)

    def warm_up(self) -> None:
        """Load the encoders' weights now (one text + one image), not on the first request."""
        if self.bundle is None:
            return
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), "white").save(buf, format="PNG")
        prompts = [Prompt("warm up", (buf.getvalue(),)), Prompt("text only")]
        auto = self.scenario(AUTO)
        # a whole decision, so that a bundle whose arrays load but cannot predict is
        # refused here (at start-up, or by a reload) and not by every request
        for row in self.router_rows(prompts, [auto, auto]):
            self.bundle.decide(row[None, :], auto)

    def features(self, prompts: list[Prompt]) -> Any:
        """The fused feature rows of ``prompts``: from the cache (a hash of text and images),
        the rest encoded as one batch; for an end-to-end router's bundle, their
        :class:`~vlroute.tokens.Tokens`."""
        if self.token_encoder is not None or not self.cache_size:   # no cache: no keys
            return self._encode(prompts)      # (token features are encoded per batch)
        keys = [_digest(p) for p in prompts]
        with self._lock:
            rows = [self._cache.get(k) for k in keys]
            for k, row in zip(keys, rows, strict=True):
                if row is not None:
                    self._cache.move_to_end(k)          # least recently used goes first
        missing = [i for i, r in enumerate(rows) if r is None]
        if missing:
            fresh = self._encode([prompts[i] for i in missing])
            with self._lock:
                for j, i in enumerate(missing):
                    rows[i] = fresh[j]      # cached as a copy: a view keeps the batch
                    self._cache[keys[i]] = fresh[j].copy()
                    self._cache.move_to_end(keys[i])
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return np.vstack(rows)  # type: ignore[arg-type]

    def _encode(self, prompts: list[Prompt]) -> Any:
        """Encode as one batch (the images stay in memory; nothing is written to disk). Each
        encoder's output is rounded to float32, as the bench's stored features are, so that
        a request decides exactly as its bench row did."""
        from vlroute.features.base import Item, MemoryImage
        from vlroute.features.fusion import fuse_outputs

        items = [Item(text=prompt.text, images=tuple(MemoryImage(data) for data in prompt.images))
                 for prompt in prompts]
        if self.token_encoder is not None:
            return self.token_encoder.encode_batch(items)
        mode, weight = self.fusion
        return fuse_outputs({kind: enc.encode_batch(items) for kind, enc in self.encoders.items()},
                            mode, weight)  # type: ignore[arg-type]

    def router_rows(self, prompts: list[Prompt], scenarios: list[Scenario]
                    ) -> list[np.ndarray]:
        """The bundle's per-model predictions for each prompt under its scenario: features
        in one batch, then one router call per kind of scenario."""
        if self.bundle is None:
            raise ValueError("router_rows needs a serving bundle.")
        X = self.features(prompts)
        resolved = [self.bundle.resolve(s) for s in scenarios]
        rows: list[np.ndarray] = [np.empty(0)] * len(prompts)
        groups: dict[tuple[str, float | None], list[int]] = {}
        for i, scenario in enumerate(resolved):
            key = (scenario.family, scenario.solved_mes if scenario.family != "utility"
                   else None)
            groups.setdefault(key, []).append(i)
        tasks = np.array([p.task for p in prompts], dtype=object)
        for idx in groups.values():
            preds = self.bundle.predictions(X[idx], resolved[idx[0]], tasks[idx])
            for j, i in enumerate(idx):
                rows[i] = np.asarray(preds[j], dtype=float)
        return rows

    def estimate_cost(self, backend: Backend, prompt: Prompt,
                      output_tokens: int = OUTPUT_TOKENS) -> float:
        """USD of a call at the config's prices (billing and budgets), from the prompt's
        estimated tokens and ``output_tokens``."""
        return (prompt_tokens(prompt, backend) * backend.price_in_per_1m
                + output_tokens * backend.price_out_per_1m) / 1e6

    def unfit(self, prompt: Prompt, output_tokens: int | None = None,
              context: bool = True) -> dict[str, str]:
        """The backends that cannot take this request, with why: text-only ones when it
        carries images, and (``context``) those whose context window is below its estimated
        size, prompt plus ``output_tokens`` (the client's max_tokens)."""
        out = {}
        for b in self.config.backends:
            if prompt.images and not b.vision:
                out[b.name] = "text-only, and the request has images"
            elif context and b.context_tokens is not None:
                need = prompt_tokens(prompt, b) + (output_tokens or 0)
                if need > b.context_tokens:
                    out[b.name] = (f"context window of {b.context_tokens} tokens; the request "
                                   f"needs about {need}")
        return out

    def needs_router(self, up: list[str]) -> bool:
        """Whether a decision among ``up`` runs the bundle (some candidate's backend is up)."""
        if self.bundle is None:
            return False
        candidates = set(self.bundle.candidates)
        return any(self.backends[n].router_model in candidates for n in up if n in self.column)

    def decide(self, prompt: Prompt, scenario: Scenario, up: list[str],
               latency: dict[str, float] | None = None, row: np.ndarray | None = None
               ) -> Decision:
        """Choose among the backends in ``up`` (config order); the rest of ``up`` follows as
        the fallback order. ``row``: the bundle's predictions for this request (needed
        when :meth:`needs_router`)."""
        if not up:
            raise RequestError("no backend is available (all are failing); try again later.",
                               status=503)
        start = time.perf_counter()
        costs = {n: self.estimate_cost(self.backends[n], prompt) for n in up}
        if row is not None and self.needs_router(up):
            decision = self._by_bundle(scenario, up, row, costs)
        else:
            decision = self._by_priors(scenario, up, latency or {}, costs)
        decision.route_ms = (time.perf_counter() - start) * 1e3
        return decision

    def _by_bundle(self, scenario: Scenario, up: list[str], row: np.ndarray,
                   costs: dict[str, float]) -> Decision:
        bundle = self.bundle
        assert bundle is not None
        scenario = bundle.resolve(scenario)
        available = np.zeros(len(bundle.models), dtype=bool)
        for n in up:
            if n in self.column:
                available[self.column[n]] = True
        choice = int(bundle.decide(row[None, :], scenario, available)[0])
        predicted = {n: (float(row[self.column[n]]) if n in self.column
                         else self.backends[n].prior_quality) for n in up}
        known = set(bundle.candidates)
        first = [n for n in up if self.column.get(n) == choice]
        candidates = sorted((n for n in up if n not in first and n in self.column
                             and bundle.models[self.column[n]] in known),
                            key=lambda n: -predicted[n])
        others = sorted((n for n in up if n not in first and n not in candidates),
                        key=lambda n: -predicted[n])
        return Decision(scenario, [*first, *candidates, *others], predicted, costs)

    def _by_priors(self, scenario: Scenario, up: list[str], latency: dict[str, float],
                   costs: dict[str, float]) -> Decision:
        if scenario.name == AUTO and self.bundle is not None:
            scenario = PRESETS["quality"].with_params(name=AUTO)
        predicted = {n: self.backends[n].prior_quality for n in up}
        lat = {n: latency.get(n, self.backends[n].latency_s) for n in up}
        preds = np.array([[predicted[n] for n in up]])
        choice = int(scenario.select(
            preds, np.array([costs[n] for n in up]), np.array([lat[n] for n in up]),
            np.array([self.backends[n].energy_j for n in up]),
            tiers=tuple(self.backends[n].tier for n in up))[0])
        rest = sorted((n for k, n in enumerate(up) if k != choice),
                      key=lambda n: -predicted[n])
        return Decision(scenario, [up[choice], *rest], predicted, costs)
