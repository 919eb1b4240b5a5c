"""Request-body schemas for the gateway's OpenAPI document.

The endpoints read the raw body themselves (one fast parse, OpenAI's loose schema, and
error messages in OpenAI's envelope), so FastAPI cannot infer these; clients and fuzzers read
them from ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

_TEXT_PART = {"type": "object", "required": ["type", "text"], "properties": {
    "type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}}
_IMAGE_PART = {"type": "object", "required": ["type", "image_url"], "properties": {
    "type": {"type": "string", "enum": ["image_url"]},
    "image_url": {"type": "object", "required": ["url"], "properties": {
        "url": {"type": "string", "description": "data:image/...;base64,... or http(s) "
                "(fetched only where the operator allows it)"},
        "detail": {"type": "string"}}}}}
_MESSAGE = {"type": "object", "required": ["role", "content"], "properties": {
    "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
    "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {
        "anyOf": [_TEXT_PART, _IMAGE_PART]}}, {"type": "null"}]}}}
_CHAT: dict[str, Any] = {
    "type": "object", "required": ["messages"],
    "properties": {
        "model": {"type": "string", "description": "A scenario (vlroute/quality, vlroute/fast, "
                  "vlroute/eco, a configured one, or an inline spec such as "
                  "vlroute/utility:cost_weight=0.3) or a backend name (no routing)."},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2}},
    "additionalProperties": True}
_FEEDBACK = {"type": "object", "required": ["request_id", "score"], "properties": {
    "request_id": {"type": "string", "description": "x-vlroute-request-id of the answer"},
    "score": {"type": "number", "minimum": 0, "maximum": 1}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


CHAT_BODY = _body(_CHAT)
FEEDBACK_BODY = _body(_FEEDBACK)
