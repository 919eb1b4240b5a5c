"""One turn of the loop end to end, as processes: a gateway in front of two stand-ins whose
accuracy on a DynaMath subset is injected (edge right on 90%, cloud on 20%), traffic, then
`vlroute loop run` (export -> collect -> judge -> bench -> train -> reload) and traffic
again: the reloaded router sends more to the edge, as the accuracies say it should. Then the
drift check."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import run_cli

from tests._collect_env import dynamath_subset, judge_yaml, set_fault, stand_ins
from tests._process import CLI, free_port, stop, wait_for
from vlroute.serve.config import hash_key
from vlroute.serve.telemetry import open_store


def gateway_yaml(path: Path, ports: dict[str, int], db: Path) -> Path:
    path.write_text(f"""
backends:
  - {{name: edge, base_url: "http://127.0.0.1:{ports['edge']}/v1", model: small, tier: edge,
     router_model: edge-2b, prior_quality: 0.3, power_w: 15, price_in_per_1m: 0,
     price_out_per_1m: 0}}
  - {{name: cloud, base_url: "http://127.0.0.1:{ports['cloud']}/v1", model: big, tier: cloud,
     router_model: cloud-72b, prior_quality: 0.9, price_in_per_1m: 2.0, price_out_per_1m: 8.0}}
router: {{artifact: no-bundle-yet, text_encoder: hashing-text, image_encoder: hashing-image}}
default_scenario: auto
admin_keys: [{{id: ops, sha256: "{hash_key('secret')}"}}]
telemetry: {{url: "sqlite:///{db}", store_prompts: true}}
""")
    return path


def traffic(gateway: str, questions: list[str]) -> None:
    with httpx.Client(timeout=30) as client:
        for q in questions:
            r = client.post(f"{gateway}/v1/chat/completions", json={
                "model": "vlroute/auto", "messages": [{"role": "user", "content": q}]})
            assert r.status_code == 200, r.text


def edge_share(db: Path, since: float = 0.0) -> float:
    store = open_store(f"sqlite:///{db}")
    try:
        rows = [r for r in store.rows() if r["status"] == 200 and r["ts"] >= since]
    finally:
        store.close()
    return sum(r["chosen"] == "edge" for r in rows) / len(rows)


def test_one_turn_retrains_and_reloads_toward_the_better_backend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subset = dynamath_subset(tmp_path / "set", n=60)
    questions = [json.loads(line)["question"] for line in
                 (subset / "samples.jsonl").read_text("utf-8").splitlines()]
    db = tmp_path / "telemetry.db"
    with stand_ins(subset, tmp_path / "stand-ins.log") as ports:
        set_fault(ports["edge"], accuracy=0.9)
        set_fault(ports["cloud"], accuracy=0.2)
        config = gateway_yaml(tmp_path / "gateway.yaml", ports, db)
        port = free_port()
        gateway = f"http://127.0.0.1:{port}"
        with (tmp_path / "gateway.log").open("wb") as log:
            proc = subprocess.Popen([*CLI, "serve", "--config", str(config), "--port",
                                     str(port)], stdout=log, stderr=log)
            try:
                wait_for(f"{gateway}/health")
                traffic(gateway, questions)
                before = edge_share(db)
                monkeypatch.setenv("VLROUTE_ADMIN_KEY", "secret")
                work = tmp_path / "turn"
                out = run_cli("loop", "run", "--config", config, "--judge",
                              judge_yaml(tmp_path / "judge.json", ports), "--work", work,
                              "--gateway", gateway, "--router", "knn")
                assert "reloaded into" in " ".join(out.split())
                turn = json.loads((work / "turn.json").read_text())
                assert turn["prompts"] >= 50 and turn["collected"]["failed"] == 0
                assert turn["reload"]["reloads"] == 1
                health = httpx.get(f"{gateway}/health").json()
                assert health["routing"]["mode"] == "bundle"
                reloaded = time.time()
                traffic(gateway, questions)
                after = edge_share(db, since=reloaded)
                assert before < 0.2 and after > before + 0.5, (before, after)
                drift = subprocess.run([*CLI, "loop", "drift", "--config", str(config),
                                        "--bundle", str(work / "bundle")],
                                       capture_output=True, text=True, check=False)
                assert drift.returncode == 0, drift.stdout + drift.stderr
                # counting the traffic served before the reload too, the live edge share is
                # far from the bundle's: time to retrain
                old = os.stat(work / "bundle" / "router.json").st_mtime - 3600
                os.utime(work / "bundle" / "router.json", (old, old))
                stale = subprocess.run([*CLI, "loop", "drift", "--config", str(config),
                                        "--bundle", str(work / "bundle"), "--last", "1000"],
                                       capture_output=True, text=True, check=False)
                assert stale.returncode == 3 and "Retrain: edge share" in stale.stdout
            finally:
                stop([proc])


def test_a_turn_without_stored_prompts_says_so(tmp_path: Path) -> None:
    from vlroute.collect.loop import LoopError, export_traffic
    from vlroute.serve.config import GatewayConfig

    db = tmp_path / "t.db"
    open_store(f"sqlite:///{db}").close()                 # a gateway that served nothing
    config = GatewayConfig.model_validate({
        "backends": [{"name": "edge", "base_url": "http://127.0.0.1:1/v1", "model": "m"}],
        "telemetry": {"url": f"sqlite:///{db}"}})
    with pytest.raises(LoopError, match=r"set telemetry\.store_prompts: true"):
        export_traffic(config, tmp_path / "export")
