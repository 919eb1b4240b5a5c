"""From an OpenAI chat request to a routing decision (pure and synchronous: the app runs it
off the event loop).

The request becomes one :class:`Prompt` (the latest user turn, with the earlier turns as
context, and every image of the conversation); the router artifact's encoders turn it into
features, the router predicts each backend's quality (or P(solved) for threshold scenarios),
and the scenario chooses among the backends that are up.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pybase64
from PIL import Image, UnidentifiedImageError

from vlroute.costs.image_tokens import BUILTIN_RULES
from vlroute.errors import VlrouteError
from vlroute.scenarios import Scenario
from vlroute.serve.config import Backend, GatewayConfig

#: tokens an image costs when estimating (a common tile count; the catalog refines per model)
IMAGE_TOKENS = 765
#: output tokens assumed for a cost estimate when the client sets no max_tokens
OUTPUT_TOKENS = 256
#: characters per token when estimating a prompt's size (English text; others run denser,
#: and the reactive context-length fallback catches what the estimate misses)
CHARS_PER_TOKEN = 4


class RequestError(VlrouteError):
    """A client request is malformed or over a limit; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


@dataclass(frozen=True)
class Prompt:
    """What the router reads of a request."""

    text: str
    images: tuple[bytes, ...] = ()
    #: (width, height) of each image, when known (for token estimates)
    sizes: tuple[tuple[int, int], ...] = ()


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


def _text_of(content: Any, where: str) -> tuple[str, list[str]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RequestError(f"{where}.content must be a string or a list of parts, got "
                           f"{type(content).__name__}.", param=f"{where}.content")
    texts, urls = [], []
    for k, part in enumerate(content):
        if not isinstance(part, dict) or "type" not in part:
            raise RequestError(f"{where}.content[{k}] must be an object with a 'type'.",
                               param=f"{where}.content[{k}]")
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(f"{where}.content[{k}].text must be a string.",
                                   param=f"{where}.content[{k}].text")
            texts.append(part["text"])
        elif part["type"] == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise RequestError(f"{where}.content[{k}].image_url.url must be a string.",
                                   param=f"{where}.content[{k}].image_url")
            urls.append(url)
    return "\n".join(texts), urls


def decode_image(url: str, config: GatewayConfig) -> tuple[bytes, tuple[int, int]]:
    """The bytes of a data-URL image, checked for size, type and decodability, and its
    (width, height)."""
    if url.startswith(("http://", "https://")):
        raise RequestError("remote image URLs are disabled on this gateway; send the image as "
                           "a data URL (data:image/png;base64,...).", param="image_url")
    if not url.startswith("data:"):
        raise RequestError(f"image_url must be a data URL or http(s) URL, got "
                           f"{url[:30]!r}.", param="image_url")
    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or ";base64" not in header:
        raise RequestError(f"image data URL must be 'data:image/<type>;base64,...', got "
                           f"{header[:40]!r}.", param="image_url")
    if len(payload) * 3 // 4 > config.limits.max_image_bytes:
        raise RequestError(f"image larger than {config.limits.max_image_bytes} bytes.",
                           status=413, param="image_url")
    try:
        data = pybase64.b64decode(payload, validate=True)   # SIMD: 50x the stdlib here
    except (binascii.Error, ValueError):
        raise RequestError("image data URL is not valid base64.", param="image_url") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            if size[0] * size[1] > config.limits.max_image_pixels:
                raise RequestError(f"image of {size[0]} x {size[1]} pixels is over the limit "
                                   f"of {config.limits.max_image_pixels} pixels.", status=413,
                                   param="image_url")
            image.verify()
    except Image.DecompressionBombError as exc:   # far over: PIL refuses it on opening
        raise RequestError(f"image is over the limit of {config.limits.max_image_pixels} "
                           f"pixels ({exc})", status=413, param="image_url") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RequestError("image data URL does not decode as an image.",
                           param="image_url") from None
    return data, size


def read_messages(body: dict[str, Any], config: GatewayConfig) -> tuple[str, list[str]]:
    """The routing text (the latest user turn, earlier turns as context) and every image URL;
    checks the structure only (cheap enough for the event loop)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list.", param="messages")
    turns, urls = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string 'role'.",
                               param=f"messages[{i}]")
        text, found = _text_of(message.get("content"), f"messages[{i}]")
        turns.append((message["role"], text))
        urls += found
    if len(urls) > config.limits.max_images:
        raise RequestError(f"{len(urls)} images; this gateway takes at most "
                           f"{config.limits.max_images}.", status=413, param="messages")
    last_user = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=None)
    latest = turns[last_user][1] if last_user is not None else turns[-1][1]
    context = [t for i, (_, t) in enumerate(turns) if i != last_user and t]
    text = latest if not context else latest + "\n\n" + "\n".join(context)
    return text, urls


def prompt_of(body: dict[str, Any], config: GatewayConfig) -> Prompt:
    """The latest user turn (earlier turns as context) and every image of the request,
    decoded and checked."""
    text, urls = read_messages(body, config)
    decoded = [decode_image(u, config) for u in urls]
    return Prompt(text, tuple(d for d, _ in decoded), tuple(s for _, s in decoded))


def prompt_tokens(prompt: Prompt, backend: Backend | None = None) -> int:
    """The request's estimated input tokens (text and images) for ``backend``: its images by
    the backend's ``image_tokens`` rule where their sizes are known, else IMAGE_TOKENS each."""
    text = len(prompt.text) // CHARS_PER_TOKEN
    if not prompt.images:
        return text
    rule = backend.image_tokens if backend is not None else None
    if rule is None or len(prompt.sizes) != len(prompt.images):
        return text + IMAGE_TOKENS * len(prompt.images)
    if not isinstance(rule, str):
        return text + int(rule) * len(prompt.images)
    w, h = (np.array(side, dtype=float) for side in zip(*prompt.sizes, strict=True))
    return text + int(BUILTIN_RULES[rule](w, h).sum())


def max_output(body: dict[str, Any]) -> int | None:
    """The client's cap on output tokens (``max_completion_tokens``, else ``max_tokens``);
    None when it sets none (a malformed one is the backend's to refuse)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _digest(prompt: Prompt) -> bytes:
    text = prompt.text.encode("utf-8", "surrogatepass")
    h = hashlib.blake2b(len(text).to_bytes(8, "little"), digest_size=20)
    h.update(text)
    for image in prompt.images:
        h.update(len(image).to_bytes(8, "little"))
        h.update(image)
    return h.digest()


class RoutingEngine:
    """Predictions and decisions over the configured backends."""

    def __init__(self, config: GatewayConfig, router: Any = None,
                 encoders: dict[str, Any] | None = None,
                 fusion: tuple[str, float] = ("normalize_concat", 0.5)) -> None:
        self.config = config
        self.router = router
        self.encoders = encoders or {}
        self.fusion = fusion
        self.backends = {b.name: b for b in config.backends}
        self.cache_size = config.router.cache_size
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: GatewayConfig) -> RoutingEngine:
        """Load the artifact and its encoders; training-free when no artifact is set or the
        file is absent (``vlroute demo`` not run yet). An artifact trained on other features
        than the configured encoders is refused."""
        artifact = config.router.artifact
        if artifact is None or not (Path(artifact) / "router.json").is_file():
            return cls(config)
        from vlroute.features.registry import make_encoder
        from vlroute.routers.persistence import artifact_metadata, load_router

        meta = artifact_metadata(Path(artifact))
        trained = meta.get("feature_spec") or {}
        encoders = {kind: make_encoder(name) for kind, name in
                    (("text", config.router.text_encoder),
                     ("image", config.router.image_encoder)) if name}
        for kind in ("text", "image"):
            have = encoders[kind].encoder_id if kind in encoders else None
            if trained.get(kind) != have:
                from vlroute.serve.config import ConfigError

                raise ConfigError(f"router artifact {artifact} was trained on {kind} features "
                                  f"{trained.get(kind)!r}; the config's {kind}_encoder gives "
                                  f"{have!r}.")
        return cls(config, load_router(Path(artifact), feature_spec=trained), encoders,
                   fusion=(trained.get("fusion", "normalize_concat"),
                           float(trained.get("text_weight", 0.5))))

    def warm_up(self) -> None:
        """Load the encoders' weights now (one text + one image), not on the first request."""
        if self.router is None:
            return
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), "white").save(buf, format="PNG")
        self.features([Prompt("warm up", (buf.getvalue(),)), Prompt("text only")])

    def features(self, prompts: list[Prompt]) -> np.ndarray:
        """The fused feature rows of ``prompts``: from the cache (a hash of text and images),
        the rest encoded as one batch."""
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
                    rows[i] = fresh[j]
                    if self.cache_size:     # a copy: a view would keep the whole batch
                        self._cache[keys[i]] = fresh[j].copy()
                        self._cache.move_to_end(keys[i])
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return np.vstack(rows)  # type: ignore[arg-type]

    def _encode(self, prompts: list[Prompt]) -> np.ndarray:
        """Encode as one batch (images go through temporary files, which is what the
        encoders read)."""
        from vlroute.features.base import Item
        from vlroute.features.fusion import Fusion

        with tempfile.TemporaryDirectory(prefix="vlroute-req-") as tmp:
            items = []
            for i, prompt in enumerate(prompts):
                paths = []
                for k, data in enumerate(prompt.images):
                    path = Path(tmp) / f"image{i}-{k}"
                    path.write_bytes(data)
                    paths.append(path)
                items.append(Item(text=prompt.text, images=tuple(paths)))
            parts = {kind: enc.encode_batch(items) for kind, enc in self.encoders.items()}
        mode, weight = self.fusion
        if "text" not in parts or "image" not in parts:
            mode = "text" if "text" in parts else "image"
        return Fusion(mode, weight)(parts.get("text"), parts.get("image"))  # type: ignore[arg-type]

    def router_rows(self, prompts: list[Prompt], scenarios: list[Scenario]
                    ) -> list[np.ndarray]:
        """The router's per-model predictions for each prompt under its scenario: features
        in one batch, then one router call per kind of scenario."""
        if self.router is None:
            raise ValueError("router_rows needs a router artifact.")
        X = self.features(prompts)
        rows: list[np.ndarray] = [np.empty(0)] * len(prompts)
        groups: dict[tuple[str, float | None], list[int]] = {}
        for i, scenario in enumerate(scenarios):
            key = (scenario.family, scenario.solved_mes if scenario.family != "utility"
                   else None)
            groups.setdefault(key, []).append(i)
        for idx in groups.values():
            preds = self.router.predictions_for(X[idx], scenarios[idx[0]])
            for j, i in enumerate(idx):
                rows[i] = np.asarray(preds[j], dtype=float)
        return rows

    def predict(self, prompt: Prompt, scenario: Scenario, names: list[str],
                row: np.ndarray | None = None) -> dict[str, float]:
        """Each backend's predicted quality (utility) or P(solved) (threshold); ``row``: the
        router's predictions when already computed (batched)."""
        out = {n: self.backends[n].prior_quality for n in names}
        if self.router is None:
            return out
        preds = row if row is not None else self.router_rows([prompt], [scenario])[0]
        models = list(self.router.models_)
        for n in names:
            model = self.backends[n].router_model
            if model in models:
                out[n] = float(preds[models.index(model)])
        return out

    def estimate_cost(self, backend: Backend, prompt: Prompt,
                      output_tokens: int = OUTPUT_TOKENS) -> float:
        """USD of a call, from the prompt's estimated tokens and ``output_tokens``."""
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

    def decide(self, prompt: Prompt, scenario: Scenario, up: list[str],
               latency: dict[str, float] | None = None, row: np.ndarray | None = None
               ) -> Decision:
        """Choose among the backends in ``up`` (config order); the rest of ``up`` follows as
        the fallback order, best predicted first. ``row``: see :meth:`predict`."""
        if not up:
            raise RequestError("no backend is available (all are failing); try again later.",
                               status=503)
        start = time.perf_counter()
        predicted = self.predict(prompt, scenario, up, row)
        costs = {n: self.estimate_cost(self.backends[n], prompt) for n in up}
        lat = {n: (latency or {}).get(n, self.backends[n].latency_s) for n in up}
        preds = np.array([[predicted[n] for n in up]])
        choice = int(scenario.select(
            preds, np.array([costs[n] for n in up]), np.array([lat[n] for n in up]),
            np.array([self.backends[n].energy_j for n in up]),
            tiers=tuple(self.backends[n].tier for n in up))[0])
        rest = sorted((n for k, n in enumerate(up) if k != choice),
                      key=lambda n: -predicted[n])
        return Decision(scenario, [up[choice], *rest], predicted, costs,
                        route_ms=(time.perf_counter() - start) * 1e3)

