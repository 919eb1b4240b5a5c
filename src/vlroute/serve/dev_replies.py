"""The dev stand-ins' replies: the answer of one stand-in to one request (JSON or SSE, with
or without usage), error envelopes, and the replies a fault makes (see
:mod:`vlroute.serve.dev_backends`)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

if TYPE_CHECKING:
    from vlroute.serve.dev_backends import Fault

#: prompt tokens every answer reports (the gateway's estimate for a 40-character prompt)
PROMPT_TOKENS = 10
_KINDS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          429: "rate_limit_error"}


def count_images(body: dict[str, Any]) -> int:
    count = 0
    for message in body.get("messages") or []:
        parts = message.get("content") if isinstance(message, dict) else None
        if isinstance(parts, list):
            count += sum(isinstance(p, dict) and p.get("type") == "image_url" for p in parts)
    return count


def error_reply(status: int, message: str) -> JSONResponse:
    kind = _KINDS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": None,
                                   "code": None}}, status)


class CutResponse(Response):
    """Status, headers and ``parts``, then the connection drops (the body never completes:
    the server closes the connection, which the client sees as a broken transfer)."""

    def __init__(self, parts: list[bytes], media_type: str, length: int | None) -> None:
        super().__init__(media_type=media_type)
        self.parts = parts
        self.raw_headers = [(b"content-type", media_type.encode())]
        if length is not None:
            self.raw_headers.append((b"content-length", str(length).encode()))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": self.raw_headers})
        for part in self.parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})


class Reply:
    """The answer of stand-in ``name`` to one request body."""

    def __init__(self, name: str, body: dict[str, Any], text: str | None = None,
                 bad_usage: bool = False) -> None:
        self.name, self.body, self.bad_usage = name, body, bad_usage
        self.model = body.get("model") if isinstance(body.get("model"), str) else name
        messages = body.get("messages")
        self.text = text or (f"[{name}] got {len(messages) if isinstance(messages, list) else 0}"
                             f" message(s), {count_images(body)} image(s).")
        self.rid, self.created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())

    def usage(self) -> dict[str, Any]:
        words = len(self.text.split())
        if self.bad_usage:
            return {"prompt_tokens": "ten", "completion_tokens": -words}
        return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": words,
                "total_tokens": PROMPT_TOKENS + words}

    def json(self, usage: bool) -> bytes:
        doc: dict[str, Any] = {
            "id": self.rid, "object": "chat.completion", "created": self.created,
            "model": self.model, "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": self.text}}]}
        if usage:
            doc["usage"] = self.usage()
        return json.dumps(doc).encode()

    def events(self, usage: bool) -> list[bytes]:
        """The SSE events of the streamed answer, [DONE] included."""
        def event(doc: dict[str, Any]) -> bytes:
            return f"data: {json.dumps(doc)}\n\n".encode()

        head = {"id": self.rid, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model}
        pieces = self.text.split(" ")
        out = [event({**head, "choices": [{"index": 0, "delta": {
            "content": piece + (" " if n < len(pieces) - 1 else "")}, "finish_reason": None}]})
            for n, piece in enumerate(pieces)]
        options = self.body.get("stream_options")
        if usage and isinstance(options, dict) and options.get("include_usage"):
            out.append(event({**head, "choices": [], "usage": self.usage()}))
        return [*out, b"data: [DONE]\n\n"]


async def answer(reply: Reply, fault: Fault, hit: bool) -> Response:
    """The reply as ``fault`` (when it ``hit`` this request) makes it."""
    mode = fault.mode if hit else "ok"
    stream = bool(reply.body.get("stream"))
    if mode == "status":
        assert fault.status is not None
        return error_reply(fault.status, fault.message or f"injected fault: HTTP {fault.status}")
    if mode == "slow":
        await asyncio.sleep(fault.delay_s)
    if mode == "malformed" and reply.name != "judge":
        return Response(b"<html>upstream hiccup</html>", media_type="application/json")
    if mode == "cut_stream":
        if stream:
            return CutResponse(reply.events(True)[:fault.after_chunks], "text/event-stream",
                               None)
        content = reply.json(True)
        return CutResponse([content[:len(content) // 2]], "application/json", len(content))
    if not stream:
        return Response(reply.json(mode != "no_usage"), media_type="application/json")
    events, pause = reply.events(mode != "no_usage"), fault.chunk_delay_s if hit else 0.0

    async def relay() -> AsyncIterator[bytes]:
        for n, chunk in enumerate(events):
            if pause and n:
                await asyncio.sleep(pause)
            yield chunk
    return StreamingResponse(relay(), media_type="text/event-stream")


__all__ = ["PROMPT_TOKENS", "CutResponse", "Reply", "answer", "count_images", "error_reply"]
