"""What the bench scripts share: the CLI as a command, a free loopback port, and waiting for
a server to answer."""

from __future__ import annotations

import socket
import sys
import time

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
