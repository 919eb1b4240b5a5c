"""The gateway serves what ``vlroute eval --artifact`` measured: the embedded DynaMath demo
set's test split, replayed through ``/v1/route`` of a gateway with one backend per bundle
candidate and the feature cache off, chooses as the decisions file says, sample by sample.

The real encoders (MiniLM, EfficientNet-Lite0) are replayed by ``bench/replay.py``; here the
hashing encoders keep the test fast: the decision path under test is the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli as run
from fastapi.testclient import TestClient

from vlroute.data import load_bench
from vlroute.demo_data import demo_set_path
from vlroute.routers.bundle import load_bundle
from vlroute.serve.app import create_app
from vlroute.serve.config import GatewayConfig
from vlroute.serve.replay import compare, read_decisions, replay_config, replay_requests

PAIR = "Qwen2-VL-7B-Instruct,Qwen2-VL-72B-Instruct"


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("replay")
    run("bench", "build", demo_set_path(), "--out", root / "bench")
    run("features", root / "bench", "--text", "hashing-text", "--image", "hashing-image")
    return root


@pytest.mark.parametrize(("router", "extra"), [
    ("knn", ()),                                                  # every model, cost_weight@dev
    ("knn", ("--models", PAIR, "--scenario", "mes=6,tau=0.5,edge_first=1",
             "--target", "apsp_drop<=0.05")),                    # the pair, tau calibrated
    ("prknn", ()),                                                # a policy router
])
def test_the_gateway_chooses_what_eval_measured(bench_dir: Path, router: str,
                                                extra: tuple[str, ...]) -> None:
    art = bench_dir / f"{router}-{len(extra)}"
    run("train", router, bench_dir / "bench", "--features", "hashing-text,hashing-image",
        *extra, "--out", art, "--overwrite")
    decisions = bench_dir / f"{art.name}.jsonl"
    out = run("eval", bench_dir / "bench", "--artifact", art, "--decisions", decisions)
    assert "(bundle)" in out and "best_single_by_rank" in out
    rows = read_decisions(decisions)
    bench = load_bench(bench_dir / "bench")
    assert len(rows) == int((bench.samples["split"] == "test").sum()) > 100
    bundle = load_bundle(art)
    cfg = GatewayConfig.model_validate(replay_config(
        art, list(bundle.candidates), "hashing-text", "hashing-image",
        f"sqlite:///{bench_dir / (art.name + '.db')}"))
    served = {}
    with TestClient(create_app(cfg)) as client:
        health = client.get("/health").json()["routing"]
        assert health["mode"] == "bundle" and health["scenario"] == bundle.scenario.spec()
        for sid, body in replay_requests(bench, [r["sample_id"] for r in rows]):
            reply = client.post("/v1/route", json=body)
            assert reply.status_code == 200, reply.text
            assert reply.json()["scenario"] == "auto"
            served[sid] = reply.json()["router_model"]
    report = compare(rows, served)
    assert report["disagreements"] == [], json.dumps(report, indent=1)[:2000]
    assert len(report["near_ties"]) <= 3
    assert report["equal"] >= len(rows) - 3
