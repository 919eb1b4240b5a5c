"""Starting the gateway and the dev backends as real processes on loopback (for tests)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

CLI = [sys.executable, "-c", "from vlroute.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up in {seconds} s")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate every process; kill one that has not exited 10 s later (a gateway still
    draining a request), so no test leaves a server behind."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def gateway_with_backends(tmp: Path, *serve_args: str, **settings: str) -> Iterator[str]:
    """Two dev backends ("edge" small, "cloud" big) and a gateway in front of them, as
    processes; yields the gateway's base URL. ``serve_args``: more `vlroute serve` options;
    ``settings``: extra top-level YAML sections."""
    edge, cloud, gateway = free_port(), free_port(), free_port()
    config = tmp / "gateway.yaml"
    config.write_text(f"""
backends:
  - {{name: edge, base_url: "http://127.0.0.1:{edge}/v1", model: small, tier: edge,
     prior_quality: 0.7}}
  - {{name: cloud, base_url: "http://127.0.0.1:{cloud}/v1", model: big, tier: cloud,
     prior_quality: 0.9, price_in_per_1m: 1.0}}
router: {{artifact: missing-router}}
telemetry: {{url: "sqlite:///{tmp / 'telemetry.db'}"}}
""" + "".join(f"{key}: {value}\n" for key, value in settings.items()))
    log = (tmp / "processes.log").open("wb")
    procs = [subprocess.Popen([*CLI, "dev-backends", "--ports", f"{edge},{cloud}"],
                              stdout=log, stderr=log)]
    try:
        wait_for(f"http://127.0.0.1:{edge}/v1/models")
        wait_for(f"http://127.0.0.1:{cloud}/v1/models")
        procs.append(subprocess.Popen([*CLI, "serve", "--config", str(config), "--port",
                                       str(gateway), *serve_args], stdout=log, stderr=log))
        wait_for(f"http://127.0.0.1:{gateway}/health")
        yield f"http://127.0.0.1:{gateway}"
    finally:
        stop(procs)
        log.close()
