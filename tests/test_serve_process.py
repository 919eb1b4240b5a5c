"""The gateway as a real process on loopback, in front of the two dev backends (real
processes too), as a user would run them."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
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


def test_gateway_process_routes_between_two_backend_processes(tmp_path: Path) -> None:
    edge, cloud, gateway = free_port(), free_port(), free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
backends:
  - {{name: edge, base_url: "http://127.0.0.1:{edge}/v1", model: small, tier: edge,
     prior_quality: 0.7}}
  - {{name: cloud, base_url: "http://127.0.0.1:{cloud}/v1", model: big, tier: cloud,
     prior_quality: 0.9, price_in_per_1m: 1.0}}
router: {{artifact: missing-router}}
telemetry: {{url: "sqlite:///{tmp_path / 'telemetry.db'}"}}
""")
    log = (tmp_path / "processes.log").open("wb")
    procs = [subprocess.Popen([*CLI, "dev-backends", "--ports", f"{edge},{cloud}"],
                              stdout=log, stderr=log)]
    try:
        wait_for(f"http://127.0.0.1:{edge}/v1/models")
        wait_for(f"http://127.0.0.1:{cloud}/v1/models")
        procs.append(subprocess.Popen([*CLI, "serve", "--config", str(config), "--port",
                                       str(gateway)], stdout=log, stderr=log))
        wait_for(f"http://127.0.0.1:{gateway}/health")
        ask = {"messages": [{"role": "user", "content": "2 + 2?"}]}
        quality = httpx.post(f"http://127.0.0.1:{gateway}/v1/chat/completions",
                             json={"model": "vlroute/quality", **ask}, timeout=10)
        assert quality.status_code == 200, quality.text
        assert quality.headers["x-vlroute-model"] == "cloud"
        assert quality.json()["choices"][0]["message"]["content"].startswith("[cloud]")
        cheap = httpx.post(f"http://127.0.0.1:{gateway}/v1/chat/completions",
                           json={"model": "vlroute/mes=6,tau=0.6", **ask}, timeout=10)
        assert cheap.headers["x-vlroute-model"] == "edge"
        with httpx.stream("POST", f"http://127.0.0.1:{gateway}/v1/chat/completions",
                          json={"model": "edge", "stream": True, **ask}, timeout=10) as r:
            body = b"".join(r.iter_bytes())
        assert body.endswith(b"data: [DONE]\n\n")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        log.close()
