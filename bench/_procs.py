"""What the bench scripts share: the CLI as a command, a free loopback port, waiting for a
server to answer, the gateway and the dev backends as processes, and reading a gateway's
health and error replies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

CLI = [sys.executable, "-c", "from vlroute.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {seconds} s")


def start_gateway(config: Path, port: int, log: IO[bytes], *args: str
                  ) -> subprocess.Popen[bytes]:
    """``vlroute serve`` on ``port``, answering ``/health`` when this returns."""
    proc = subprocess.Popen([*CLI, "serve", "--config", str(config), "--port", str(port),
                             *args], stdout=log, stderr=log)
    wait_for(f"http://127.0.0.1:{port}/health")
    return proc


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """Terminate ``proc``; kill it if it has not exited ``timeout_s`` later."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def set_fault(port: int, fault: dict[str, Any] | None = None) -> int:
    """Give the dev backend on ``port`` this fault (None: none), restarting its count of
    requests; how many it had answered since the last change."""
    url = f"http://127.0.0.1:{port}/admin/faults"
    before = int(httpx.get(url, timeout=10).json()["requests"])
    httpx.post(url, json=fault or {}, timeout=10).raise_for_status()
    return before


def in_flight(gateway: str, settle_s: float = 5.0) -> dict[str, int]:
    """Each backend's requests in flight, polled until all are 0 (streams end a moment after
    their client) or ``settle_s`` has passed."""
    deadline = time.monotonic() + settle_s
    while True:
        health = httpx.get(f"{gateway}/health", timeout=10).json()
        busy = {name: b["in_flight"] for name, b in health["backends"].items()}
        if not any(busy.values()) or time.monotonic() > deadline:
            return busy
        time.sleep(0.2)


def envelope(status: int, content: bytes) -> dict[str, Any] | None:
    """The error object of an error reply in the OpenAI envelope (``{"error": {"message",
    "type", "param", "code"}}`` and nothing else), else None."""
    try:
        doc = json.loads(content)
    except ValueError:
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    if status < 400 or set(doc) != {"error"} or not isinstance(error, dict) \
            or not {"message", "type", "param", "code"} <= set(error):
        return None
    return error


#: the parameter a 503 must name: no backend available, a full queue, the database
NAMED_503 = ("model", "queue", "database")


@dataclass
class Tally:
    """Replies to bad or hostile requests, checked against what the gateway promises: no
    500, every error in the envelope, a 502 only where every candidate refused (the case
    allows it, and its code says so), a 503 only where the case allows it and named."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    http_500: list[str] = field(default_factory=list)
    no_envelope: list[str] = field(default_factory=list)
    bad_502: list[str] = field(default_factory=list)
    bad_503: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def add(self, case: str, status: int, content: bytes, allowed: Collection[int]
            ) -> dict[str, Any] | None:
        """Count one reply; its error object, if any."""
        self.requests += 1
        self.statuses[status] += 1
        error = envelope(status, content)
        seen = f"{case}: {status}"
        if status == 500:
            self.http_500.append(seen)
        if status >= 400 and error is None:
            self.no_envelope.append(f"{seen} {content[:60]!r}")
        if status == 502 and (502 not in allowed or (error or {}).get("code")
                              != "upstream_unavailable"):
            self.bad_502.append(seen)
        if status == 503 and (503 not in allowed or (error or {}).get("param")
                              not in NAMED_503):
            self.bad_503.append(f"{seen} (param {(error or {}).get('param')!r})")
        if status not in allowed:
            expected = (f"{allowed.start}-{allowed.stop - 1}" if isinstance(allowed, range)
                        else "/".join(map(str, sorted(allowed))))
            self.unexpected.append(f"{seen}, expected {expected}")
        return error

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "http_500": self.http_500, "no_envelope": self.no_envelope,
                "bad_502": self.bad_502, "bad_503": self.bad_503,
                "unexpected": self.unexpected}


def raw_http(port: int, data: bytes, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Send ``data`` as is on a new connection; (status, body) of the reply (0: none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(data)
        out = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body


async def slow_loris(port: int, give_up_s: float) -> float | None:
    """Open a connection, start a request and dribble one header line every 0.2 s, never
    finishing; seconds until the server closes the connection (None: still open after
    ``give_up_s``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n")

    async def dribble() -> None:
        n = 0
        while True:
            await asyncio.sleep(0.2)
            writer.write(b"X-Dribble-%d: a\r\n" % n)
            n += 1
            await writer.drain()

    dribbler = asyncio.create_task(dribble())
    try:
        await asyncio.wait_for(reader.read(), give_up_s)     # EOF: the server closed it
        return time.monotonic() - start
    except TimeoutError:
        return None
    except OSError:
        return time.monotonic() - start
    finally:
        dribbler.cancel()
        with contextlib.suppress(BaseException):
            await dribbler
        writer.close()
