"""The gateway as a real process on loopback, in front of the two dev backends (real
processes too), as a user would run them."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests._process import gateway_with_backends
from vlroute.serve.config import hash_key


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
    with sqlite3.connect(tmp_path / "telemetry.db") as db:
        stored = {r[0] for r in db.execute("SELECT id FROM requests")}
    assert {a.headers["x-vlroute-request-id"] for a in answers} <= stored


def test_a_budget_holds_across_workers(tmp_path: Path) -> None:
    """40 concurrent streamed requests (a stream books exactly its estimate) over two
    workers, against a daily budget of 5.5 estimates: 5 are answered, the rest get 429."""
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
    assert codes.count(200) == len(costs) == int(0.00055 / costs[0]) == 5
    assert codes.count(429) == 35
    assert sum(costs) == pytest.approx(spent) and spent <= 0.00055
