"""The HTTP protocol ``vlroute serve`` runs: uvicorn's httptools protocol with a deadline on
request headers, and parser errors in the OpenAI error envelope. A client that opens a
connection, or starts a request, and does not finish sending its headers within
``limits.header_timeout_s`` (a slow-loris attack holding connections open) has its
connection closed; other clients are not affected. A request the HTTP parser refuses (a NUL
byte in a header, a header line without a colon, an unknown HTTP version) gets a 400 whose
body is the envelope, like every other error of the gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: set by ``vlroute serve`` (workers are separate processes: it travels in the environment)
HEADER_TIMEOUT_ENV = "VLROUTE_HEADER_TIMEOUT_S"
DEFAULT_HEADER_TIMEOUT_S = 10.0


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """Closes a connection whose request headers are not complete in time."""

    _deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        seconds = float(os.environ.get(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT_S))
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": {"message": f"malformed HTTP request: {msg}",
                                     "type": "invalid_request_error", "param": None,
                                     "code": "bad_http"}}).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head += [b"content-type: application/json\r\n",
                 b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                 b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(head))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
