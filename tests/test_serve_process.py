"""The gateway as a real process on loopback, in front of the two dev backends (real
processes too), as a user would run them."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests._process import CLI, free_port, gateway_with_backends, stop, wait_for
from tests.test_serve import scrape
from vlroute.serve.config import hash_key
from vlroute.serve.metrics import SHARE_EVERY_S


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


def test_workers_share_the_port_and_the_telemetry_file(tmp_path: Path) -> None:
    with gateway_with_backends(tmp_path, "--workers", "2") as gateway:
        ask = {"model": "vlroute/quality", "messages": [{"role": "user", "content": "2 + 2?"}]}
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: httpx.post(
                f"{gateway}/v1/chat/completions", json=ask, timeout=30), range(40)))
        assert all(a.status_code == 200 for a in answers)
        time.sleep(SHARE_EVERY_S + 0.5)      # every worker has shared its numbers since
        for _ in range(4):                   # whichever worker takes the scrape
            samples = scrape(httpx.get(f"{gateway}/metrics", timeout=10).text)
            assert samples["vlroute_requests_total", ()] == 40
            assert samples["vlroute_decisions_total", (("model", "cloud"),)] == 40
    with sqlite3.connect(tmp_path / "telemetry.db") as db:
        stored = {r[0] for r in db.execute("SELECT id FROM requests")}
    assert {a.headers["x-vlroute-request-id"] for a in answers} <= stored


def test_a_budget_holds_across_workers(tmp_path: Path) -> None:
    """40 concurrent streamed requests over two workers, against a daily budget of 5.5
    estimates: a budgeted stream asks for its usage event, so it books the backend's count
    (less than its estimate) and more than 5 fit, but spend never goes over the budget and
    the rest get 429."""
    key = "s3cret"
    prompt = "x" * 400              # 100 estimated input tokens at $1 per 1M: $0.0001
    keys = f"[{{id: alice, sha256: '{hash_key(key)}', budget_usd_day: 0.00055}}]"
    with gateway_with_backends(tmp_path, "--workers", "2", auth_keys=keys) as gateway:
        ask = {"model": "cloud", "stream": True,
               "messages": [{"role": "user", "content": prompt}]}

        def one(_: int) -> int:
            with httpx.stream("POST", f"{gateway}/v1/chat/completions", json=ask, timeout=30,
                              headers={"authorization": f"Bearer {key}"}) as r:
                r.read()
                if r.status_code == 429:
                    assert "daily budget" in r.json()["error"]["message"]
                return r.status_code
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(one, range(40)))
    with sqlite3.connect(tmp_path / "telemetry.db") as db:
        costs = [r[0] for r in db.execute("SELECT cost_usd FROM requests WHERE status = 200")]
        spent = db.execute("SELECT spent FROM budget_spend WHERE key_id = 'alice' AND "
                           "length(period) = 10").fetchone()[0]
    assert codes.count(200) == len(costs) >= 5 and codes.count(429) == 40 - len(costs) > 0
    assert all(c == pytest.approx(1e-5) for c in costs)         # 10 prompt tokens at $1/1M
    assert sum(costs) == pytest.approx(spent) and spent <= 0.00055


SLOW_BACKEND = """
import asyncio, sys
from pathlib import Path
import uvicorn
from fastapi import FastAPI, Request
app = FastAPI()
@app.get("/v1/models")
async def models():
    return {"data": []}
@app.post("/v1/chat/completions")
async def chat(request: Request):
    await request.body()
    for _ in range(300):            # "generating" for 30 s, as a model server checks
        if await request.is_disconnected():
            Path(sys.argv[2]).write_text("stopped")
            return {}
        await asyncio.sleep(0.1)
    return {"choices": []}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def test_a_client_that_leaves_stops_the_backend(tmp_path: Path) -> None:
    """Through real processes: the client gives up after 1 s; the gateway closes its
    upstream connection, so the (slow) backend sees the disconnect and stops."""
    backend, gateway, marker = free_port(), free_port(), tmp_path / "stopped"
    config = tmp_path / "gateway.yaml"
    config.write_text(f"backends: [{{name: slow, base_url: 'http://127.0.0.1:{backend}/v1', "
                      f"model: m, timeout_s: 60}}]\nrouter: {{artifact: missing-router}}\n"
                      f"telemetry: {{url: 'sqlite:///{tmp_path / 'telemetry.db'}'}}\n")
    log = (tmp_path / "processes.log").open("wb")
    procs = [subprocess.Popen([sys.executable, "-c", SLOW_BACKEND, str(backend), str(marker)],
                              stdout=log, stderr=log),
             subprocess.Popen([*CLI, "serve", "--config", str(config), "--port", str(gateway)],
                              stdout=log, stderr=log)]
    try:
        wait_for(f"http://127.0.0.1:{backend}/v1/models")
        wait_for(f"http://127.0.0.1:{gateway}/health")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"http://127.0.0.1:{gateway}/v1/chat/completions", timeout=1.0,
                       json={"model": "slow", "messages": [{"role": "user", "content": "hi"}]})
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the backend kept generating for a client that had left"
        health = httpx.get(f"http://127.0.0.1:{gateway}/health").json()
        assert health["backends"]["slow"]["in_flight"] == 0
    finally:
        stop(procs)
        log.close()
    with sqlite3.connect(tmp_path / "telemetry.db") as db:
        assert [r[0] for r in db.execute("SELECT status FROM requests")] == [499]


def test_slow_loris_clients_are_closed_and_parser_errors_are_enveloped(tmp_path: Path) -> None:
    import json
    import socket

    with gateway_with_backends(tmp_path, limits="{header_timeout_s: 1.0}") as gateway:
        port = int(gateway.rsplit(":", 1)[1])
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-a: ")  # never ends
        start = time.monotonic()
        ok = httpx.get(f"{gateway}/health", timeout=5)            # others are served meanwhile
        assert ok.status_code == 200
        slow.settimeout(5)
        assert slow.recv(1024) == b""                              # closed by the gateway
        assert time.monotonic() - start < 3
        slow.close()
        bad = socket.create_connection(("127.0.0.1", port))
        bad.sendall(b"GET /health HTTP/9.9\r\n\r\n")
        bad.settimeout(5)
        reply = b""
        while chunk := bad.recv(4096):
            reply += chunk
        bad.close()
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
        assert json.loads(body)["error"]["code"] == "bad_http"
