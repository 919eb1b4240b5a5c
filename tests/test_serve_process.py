"""The gateway as a real process on loopback, in front of the two dev backends (real
processes too), as a user would run them."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from click.testing import CliRunner

from tests._process import gateway_with_backends
from vlroute.cli import cli


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


def test_budgets_with_several_workers_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("backends: [{name: a, base_url: 'http://127.0.0.1:9/v1', model: m}]\n"
                      f"auth_keys: [{{id: k, sha256: '{'0' * 64}', budget_usd_day: 1}}]\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config), "--workers", "2"])
    assert result.exit_code != 0 and "--workers 1" in result.output
