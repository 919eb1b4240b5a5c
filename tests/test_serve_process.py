"""The gateway as a real process on loopback, in front of the two dev backends (real
processes too), as a user would run them."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests._process import gateway_with_backends


def test_gateway_process_routes_between_two_backend_processes(tmp_path: Path) -> None:
    with gateway_with_backends(tmp_path) as gateway:
        ask = {"messages": [{"role": "user", "content": "2 + 2?"}]}
        quality = httpx.post(f"{gateway}/v1/chat/completions",
                             json={"model": "vlroute/quality", **ask}, timeout=10)
        assert quality.status_code == 200, quality.text
        assert quality.headers["x-vlroute-model"] == "cloud"
        assert quality.json()["choices"][0]["message"]["content"].startswith("[cloud]")
        cheap = httpx.post(f"{gateway}/v1/chat/completions",
                           json={"model": "vlroute/mes=6,tau=0.6", **ask}, timeout=10)
        assert cheap.headers["x-vlroute-model"] == "edge"
        with httpx.stream("POST", f"{gateway}/v1/chat/completions",
                          json={"model": "edge", "stream": True, **ask}, timeout=10) as r:
            body = b"".join(r.iter_bytes())
        assert body.endswith(b"data: [DONE]\n\n")
