"""Metrics added up over the workers of `vlroute serve --workers N`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_serve import scrape
from vlroute.serve.metrics import Metrics, SharedMetrics


def worker(requests: int, seconds: float) -> Metrics:
    m = Metrics(["edge", "cloud"])
    m.counters["requests"] += requests
    m.decisions["edge"] += requests
    for _ in range(requests):
        m.request_seconds.observe(seconds)
        m.ttft_seconds["edge"].observe(seconds)
        m.book("edge", 0.001, 100, 10)
    return m


def test_a_scrape_adds_up_every_worker(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    gone = worker(5, 0.5).snapshot({"edge": 3}, {"edge", "cloud"})
    gone["pid"] = int(dead.stdout)                     # a worker that has exited
    (tmp_path / "worker-1.json").write_text(json.dumps(gone))
    other = worker(2, 0.02).snapshot({"edge": 1, "cloud": 2}, {"edge"})
    other["pid"] = os.getppid()                        # a live worker, the cloud cut off
    (tmp_path / "worker-2.json").write_text(json.dumps(other))
    (tmp_path / "worker-3.json").write_text("{half a fi")          # being replaced
    mine = SharedMetrics(tmp_path, worker(1, 0.002))
    samples = scrape(mine.render({"edge": 1, "cloud": 0}, {"edge", "cloud"}))
    assert samples["vlroute_requests_total", ()] == 8
    assert samples["vlroute_decisions_total", (("model", "edge"),)] == 8
    assert samples["vlroute_request_seconds_count", ()] == 8
    assert samples["vlroute_request_seconds_bucket", (("le", "0.025"),)] == 3
    assert samples["vlroute_request_seconds_sum", ()] == pytest.approx(2.542)
    assert samples["vlroute_ttft_seconds_count", (("model", "edge"),)] == 8
    assert samples["vlroute_cost_usd_total", (("model", "edge"),)] == pytest.approx(0.008)
    assert samples["vlroute_tokens_total", (("kind", "prompt"), ("model", "edge"))] == 800
    assert samples["vlroute_tokens_total", (("kind", "completion"), ("model", "cloud"))] == 0
    # gauges: live workers only; a backend is up only where every live worker has it up
    assert samples["vlroute_backend_in_flight", (("model", "edge"),)] == 2
    assert samples["vlroute_backend_in_flight", (("model", "cloud"),)] == 2
    assert samples["vlroute_backend_up", (("model", "edge"),)] == 1
    assert samples["vlroute_backend_up", (("model", "cloud"),)] == 0
    assert (tmp_path / f"worker-{os.getpid()}.json").exists()     # shared its own
