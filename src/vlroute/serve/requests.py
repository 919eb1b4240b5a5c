"""From an OpenAI chat request to what routing reads of it: the :class:`Prompt` (the latest
user turn, earlier turns as context, every image decoded and checked), its estimated size,
and the client's output cap. Malformed or over-limit requests raise :class:`RequestError`.
"""

from __future__ import annotations

import binascii
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pybase64
from PIL import Image

from vlroute.costs.image_tokens import BUILTIN_RULES
from vlroute.errors import VlrouteError
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
    #: the client's task hint (``x-vlroute-task`` or ``metadata.task``), if any
    task: str | None = None


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
    except RequestError:
        raise
    except Image.DecompressionBombError as exc:   # far over: PIL refuses it on opening
        raise RequestError(f"image is over the limit of {config.limits.max_image_pixels} "
                           f"pixels ({exc})", status=413, param="image_url") from None
    except MemoryError:
        raise
    except Exception:       # UnidentifiedImageError, OSError, ValueError, RuntimeError, ...
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
    """The client's cap on output tokens: the smaller of ``max_completion_tokens`` and
    ``max_tokens`` when both are set (a backend may read either); None when it sets none (a
    malformed one is the backend's to refuse)."""
    caps = [v for v in (body.get("max_completion_tokens"), body.get("max_tokens"))
            if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return min(caps) if caps else None


#: the longest task hint taken
MAX_HINT_CHARS = 128


def task_hint(header: str | None, body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The request's task hint, from the ``x-vlroute-task`` header or ``metadata.task`` in the
    body, and the body without it (hints are for the router, never for the backend)."""
    metadata = body.get("metadata")
    task: Any = header
    if isinstance(metadata, dict) and "task" in metadata:
        task = metadata["task"] if header is None else header
        rest = {k: v for k, v in metadata.items() if k != "task"}
        body = {k: v for k, v in body.items() if k != "metadata"}
        if rest:
            body["metadata"] = rest
    if task is None:
        return None, body
    if not isinstance(task, str) or not 0 < len(task) <= MAX_HINT_CHARS \
            or any(ord(c) < 32 or ord(c) == 127 for c in task):
        raise RequestError(f"the task hint must be 1 to {MAX_HINT_CHARS} printable "
                           "characters.", param="x-vlroute-task")
    return task, body
