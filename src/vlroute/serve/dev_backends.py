"""Stand-ins for two OpenAI-compatible model servers, to try the gateway without models.

Each answers ``POST /v1/chat/completions`` (JSON, or SSE chunks with ``stream: true``) with a
reply that names itself and counts the request's images, and ``GET /v1/models``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


def _images(body: dict[str, Any]) -> int:
    count = 0
    for message in body.get("messages", []):
        parts = message.get("content") if isinstance(message, dict) else None
        if isinstance(parts, list):
            count += sum(isinstance(p, dict) and p.get("type") == "image_url" for p in parts)
    return count


def stub_app(name: str) -> FastAPI:
    """An instant OpenAI-compatible backend called ``name``."""
    app = FastAPI(title=f"vlroute dev backend {name}")

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model"}]})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": {"message": "invalid JSON", "type": "invalid_request"
                                           "_error", "param": None, "code": None}}, 400)
        text = f"[{name}] got {len(body.get('messages', []))} message(s), {_images(body)} " \
               "image(s)."
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        if body.get("stream"):
            def events() -> Iterator[bytes]:
                for piece in text.split(" "):
                    chunk = {"id": rid, "object": "chat.completion.chunk", "created": created,
                             "model": body.get("model", name), "choices": [{
                                 "index": 0, "delta": {"content": piece + " "},
                                 "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                yield b"data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({
            "id": rid, "object": "chat.completion", "created": created,
            "model": body.get("model", name),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()),
                      "total_tokens": 10 + len(text.split())}})

    return app
