"""Inputs and failures that used to break the gateway for everyone: client-chosen header
values, backends that refuse or cut off, answers without usage, breaker reads, a locked
database, broken bundles on reload. Each path answers in the OpenAI envelope and gives back
the backend slot and the budget hold."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import make_set
from test_serve import Upstream, ask, client, config, leave_once_sent

from vlroute.cli import cli
from vlroute.serve.config import GatewayConfig, hash_key
from vlroute.serve.telemetry import SQLiteStore

ADMIN = "admin-secret"
MODELS = ("Qwen2-VL-7B-Instruct", "Qwen2-VL-72B-Instruct")


def envelope(reply: Any) -> dict[str, Any]:
    body = reply.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return dict(body["error"])


def in_flight(c: Any) -> dict[str, int]:
    return {n: b["in_flight"] for n, b in c.get("/health").json()["backends"].items()}


@pytest.mark.parametrize("stream", [False, True])
def test_a_scenario_name_outside_latin1_is_answered_and_frees_its_slot(
        tmp_path: Path, stream: bool) -> None:
    up = Upstream(edge=["sse" if stream else "ok"], cloud=["sse" if stream else "ok"])
    with client(config(tmp_path), up) as c:
        for _ in range(3):
            r = c.post("/v1/chat/completions", json=ask("vlroute/tau=0.5,by=usd,name=€ü",
                                                         stream=stream))
            assert r.status_code == 200, r.text
            assert r.headers["x-vlroute-scenario"] == "%E2%82%AC%C3%BC"
        assert in_flight(c) == {"edge": 0, "cloud": 0}
        long = c.post("/v1/chat/completions", json=ask("vlroute/" + "x" * 600))
        assert long.status_code == 400 and envelope(long)["param"] == "model"


def test_health_and_metrics_reads_leave_the_breaker_alone(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import vlroute.serve.breaker as breaker

    monkeypatch.setattr(breaker, "COOLDOWN_S", 0.0)    # half-open as soon as it opens
    monkeypatch.setattr(breaker.Breaker.__init__, "__defaults__", (3, 0.0))
    up = Upstream(cloud=["500", "500", "500", "ok"])
    with client(config(tmp_path), up) as c:
        for _ in range(3):
            c.post("/v1/chat/completions", json=ask("cloud"))
        for _ in range(5):                   # reads: the probe stays for a real request
            assert c.get("/health").json()["backends"]["cloud"]["breaker"] == "half_open"
            c.get("/metrics")
        before = len(up.seen)
        r = c.post("/v1/chat/completions", json=ask())     # quality: the cloud, probing
        assert r.headers["x-vlroute-model"] == "cloud" and len(up.seen) == before + 1
        assert c.get("/health").json()["backends"]["cloud"]["breaker"] == "closed"


@pytest.mark.parametrize("status", ["401", "403", "404"])
def test_a_backend_that_refuses_the_gateway_is_passed_over_and_not_billed(
        tmp_path: Path, status: str) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 't.db'}")
    up = Upstream(cloud=[status])
    with client(config(tmp_path), up, store) as c:
        r = c.post("/v1/chat/completions", json=ask())
        assert r.status_code == 200 and r.headers["x-vlroute-model"] == "edge"
        assert c.get("/health").json()["backends"]["cloud"]["failures"] == 1
        only = c.post("/v1/chat/completions", json=ask("cloud"))     # no one else to ask
        assert only.status_code == 502 and envelope(only)["code"] == "upstream_unavailable"
        assert "every candidate" in envelope(only)["message"]
    rows = store.rows()
    assert rows[0]["chosen"] == "edge" and rows[1]["status"] == 502
    assert not rows[1]["cost_usd"]


@pytest.mark.parametrize("answer", ["no-usage", "bad-usage"])
def test_an_answer_without_believable_usage_books_the_estimate(tmp_path: Path,
                                                               answer: str) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 't.db'}")
    with client(config(tmp_path), Upstream(cloud=[answer]), store) as c:
        r = c.post("/v1/chat/completions", json=ask("cloud", max_tokens=100))
        assert r.status_code == 200
    row = store.rows()[0]
    assert row["tokens_in"] is None and row["tokens_out"] is None
    # prompt of ~3 tokens at $2/1M, 100 output tokens at $8/1M: the estimate, never 0 or < 0
    assert row["cost_usd"] == pytest.approx((3 * 2.0 + 100 * 8.0) / 1e6)
    assert row["cost_usd"] > 0


def test_a_stream_cut_mid_way_is_an_error_row_with_its_partial_cost(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 't.db'}")
    with client(config(tmp_path), Upstream(cloud=["cut"]), store) as c:
        r = c.post("/v1/chat/completions", json=ask("cloud", stream=True))
        assert r.status_code == 200 and b"there" in r.content      # what got through
        assert in_flight(c)["cloud"] == 0
    row = store.rows()[0]
    assert row["status"] == 502
    assert "stream cut mid-way" in json.dumps(json.loads(row["fallback_path"]))
    # two chunks relayed: ~3 prompt tokens and 2 output tokens at the cloud's prices
    assert row["cost_usd"] == pytest.approx((3 * 2.0 + 2 * 8.0) / 1e6)


def test_every_error_is_the_envelope(tmp_path: Path) -> None:
    class Exploding(Upstream):
        async def post(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

    from fastapi.testclient import TestClient

    from vlroute.serve.app import create_app

    app = create_app(config(tmp_path), transport=Exploding())
    with TestClient(app, raise_server_exceptions=False) as c:
        assert envelope(c.get("/nowhere"))["type"] == "not_found_error"
        assert c.get("/v1/chat/completions").status_code == 405
        envelope(c.get("/v1/chat/completions"))
        r = c.post("/v1/chat/completions", json=ask(), headers={"x-big": "y" * 20_000})
        assert r.status_code == 431 and envelope(r)
        r = c.post("/v1/chat/completions", json=ask())
        assert r.status_code == 500 and envelope(r)["code"] == "internal_error"
        assert in_flight(c) == {"edge": 0, "cloud": 0}


def test_a_locked_database_spools_rows_and_refuses_holds(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    import vlroute.serve.stores as stores

    monkeypatch.setattr(stores, "BUSY_TIMEOUT_MS", 50)
    db = tmp_path / "t.db"
    key = "k1"
    cfg = GatewayConfig.model_validate({
        **config(tmp_path).model_dump(),
        "auth_keys": [{"id": "alice", "sha256": hash_key(key), "budget_usd_day": 10.0},
                      {"id": "bob", "sha256": hash_key("k2")}]})
    store = SQLiteStore(f"sqlite:///{db}")
    with client(cfg, Upstream(), store) as c:
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")                 # someone else holds the file
        try:
            r = c.post("/v1/chat/completions", json=ask(),
                       headers={"authorization": "Bearer k2"})
            assert r.status_code == 200, r.text            # answered; its row is spooled
            held = c.post("/v1/chat/completions", json=ask(),
                          headers={"authorization": f"Bearer {key}"})
            assert held.status_code == 503 and envelope(held)["param"] == "database"
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        spooled = list(tmp_path.glob("t.db.spool.*.jsonl"))
        assert len(spooled) == 1
        r = c.post("/v1/chat/completions", json=ask(), headers={"authorization": "Bearer k2"})
        assert r.status_code == 200
        assert not list(tmp_path.glob("t.db.spool.*.jsonl"))      # replayed, then removed
    assert len(store.rows()) == 2


def bundle(tmp_path: Path, name: str, *extra: str) -> Path:
    models = [{"model": m, "display_name": m, "family": "F", "params_b": p,
               "open_weights": True, "modality": "vision-language", "notes": ""}
              for m, p in zip(MODELS, (7, 72), strict=True)]
    bench = tmp_path / "bench"
    runner = CliRunner()
    steps = [["train", "knn", bench, "--features", "hashing-text,hashing-image",
              "--param", "n_neighbors=3", *extra, "--out", tmp_path / name]]
    if not bench.exists():
        toy = make_set(tmp_path / "toy", n_groups=12, models=models)
        steps = [["bench", "build", toy, "--out", bench],
                 ["features", bench, "--text", "hashing-text", "--image", "hashing-image"],
                 *steps]
    for args in steps:
        result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return tmp_path / name


def served(tmp_path: Path, artifact: Path) -> GatewayConfig:
    base = config(tmp_path)
    return GatewayConfig.model_validate({
        **base.model_dump(), "default_scenario": "auto",
        "admin_keys": [{"id": "ops", "sha256": hash_key(ADMIN)}],
        "router": {"artifact": artifact, "text_encoder": "hashing-text",
                   "image_encoder": "hashing-image", "cache_size": 0},
        "backends": [{**b.model_dump(), "router_model": m}
                     for b, m in zip(base.backends, MODELS, strict=True)]})


def test_reload_swaps_the_bundle_and_refuses_a_broken_one(tmp_path: Path) -> None:
    first = bundle(tmp_path, "first")
    second = bundle(tmp_path, "second", "--scenario", "mes=6,tau=0.4,edge_first=1")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "router.json").write_text('{"format": "vlroute-router/1", "router": "oracle"}')
    admin = {"authorization": f"Bearer {ADMIN}"}
    with client(served(tmp_path, first), Upstream()) as c:
        before = c.get("/health").json()["routing"]
        assert before["mode"] == "bundle" and before["chosen_by"] == "cost_weight@dev"
        assert c.post("/v1/route", json=ask("vlroute/auto")).json()["scenario"] == "auto"
        assert c.post("/admin/reload", json={"artifact": str(second)}).status_code == 401
        r = c.post("/admin/reload", json={"artifact": str(broken)}, headers=admin)
        assert r.status_code == 409 and "keeps serving" in envelope(r)["message"]
        assert c.get("/health").json()["routing"] == before            # unchanged
        assert c.post("/v1/chat/completions", json=ask()).status_code == 200
        r = c.post("/admin/reload", json={"artifact": str(second)}, headers=admin)
        assert r.status_code == 200 and r.json()["routing"]["scenario"].startswith("tau=0.4")
        no_model = {"messages": ask()["messages"]}
        decision = c.post("/v1/route", json=no_model).json()          # default: auto
        assert decision["scenario_spec"].startswith("tau=0.4")
        health = c.get("/health").json()
        assert health["reloads"] == 1 and health["reload_refused"] is False


def test_a_baseline_or_foreign_artifact_is_refused_at_start_up(tmp_path: Path) -> None:
    from vlroute.serve.config import ConfigError

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "router.json").write_text('{"format": "vlroute-router/1", "router": "oracle", '
                                        '"feature_spec": {"text": "hashing-text-64", '
                                        '"image": "hashing-image-64"}}')
    with pytest.raises(ConfigError, match="cannot serve router artifact"), \
            client(served(tmp_path, broken), Upstream()):
        pass


def test_a_reload_of_a_missing_or_damaged_bundle_is_refused(tmp_path: Path) -> None:
    import shutil

    first = bundle(tmp_path, "first")
    damaged = tmp_path / "damaged"
    shutil.copytree(first, damaged)
    data = (damaged / "arrays.npz").read_bytes()
    (damaged / "arrays.npz").write_bytes(data[:len(data) // 2])
    admin = {"authorization": f"Bearer {ADMIN}"}
    with client(served(tmp_path, first), Upstream()) as c:
        for path in (tmp_path / "nowhere", tmp_path, damaged, first / "router.json"):
            r = c.post("/admin/reload", json={"artifact": str(path)}, headers=admin)
            assert r.status_code == 409, (path, r.text)
            assert c.get("/health").json()["routing"]["mode"] == "bundle"
        r = c.post("/admin/reload", json={"artifact": "a\x00b"}, headers=admin)
        assert r.status_code == 400 and envelope(r)["param"] == "artifact"


def test_a_pin_the_database_cannot_take_does_not_lose_the_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vlroute.serve.stores as stores

    monkeypatch.setattr(stores, "BUSY_TIMEOUT_MS", 50)
    db = tmp_path / "t.db"
    store = SQLiteStore(f"sqlite:///{db}")
    up = Upstream()
    with client(config(tmp_path), up, store) as c:
        c.post("/v1/chat/completions", json=ask(), headers={"x-vlroute-session": "warm"})
        real_pin = store.pin

        def locked_pin(*args: Any) -> Any:
            raise sqlite3.OperationalError("database is locked")

        store.pin = locked_pin  # type: ignore[method-assign]
        r = c.post("/v1/chat/completions", json=ask(), headers={"x-vlroute-session": "conv-1"})
        store.pin = real_pin  # type: ignore[method-assign]
        assert r.status_code == 200, r.text
    assert len(store.rows()) == 2


def test_a_budgeted_key_sends_the_cap_its_hold_was_sized_for(tmp_path: Path) -> None:
    cfg = GatewayConfig.model_validate({
        **config(tmp_path).model_dump(),
        "auth_keys": [{"id": "alice", "sha256": hash_key("k1"), "budget_usd_day": 1.0},
                      {"id": "bob", "sha256": hash_key("k2")}]})
    up = Upstream(cloud=["ok"])
    with client(cfg, up) as c:
        alice, bob = {"authorization": "Bearer k1"}, {"authorization": "Bearer k2"}
        c.post("/v1/chat/completions", json=ask("cloud"), headers=alice)
        assert up.seen[-1][1]["max_tokens"] == 256                # the hold's output cap
        c.post("/v1/chat/completions", json=ask("cloud", max_tokens=4096,
                                                max_completion_tokens=1), headers=alice)
        assert up.seen[-1][1]["max_tokens"] == up.seen[-1][1]["max_completion_tokens"] == 1
        c.post("/v1/chat/completions", json=ask("cloud", stream=True), headers=alice)
        assert up.seen[-1][1]["stream_options"] == {"include_usage": True}
        c.post("/v1/chat/completions", json=ask("cloud"), headers=bob)     # no budget
        assert "max_tokens" not in up.seen[-1][1]
        bad = c.post("/v1/chat/completions", json=ask("vlroute/tau=0.5,name=x\u0000"),
                     headers=bob)
        assert bad.status_code == 400 and envelope(bad)["param"] == "model"


def test_sessions_are_pinned_per_api_key(tmp_path: Path) -> None:
    cfg = GatewayConfig.model_validate({
        **config(tmp_path).model_dump(),
        "auth_keys": [{"id": "alice", "sha256": hash_key("k1")},
                      {"id": "bob", "sha256": hash_key("k2")}]})
    with client(cfg, Upstream()) as c:
        session = {"x-vlroute-session": "conv-1"}
        r = c.post("/v1/chat/completions", json=ask("vlroute/mes=6,tau=0.6"),
                   headers={**session, "authorization": "Bearer k1"})
        assert r.headers["x-vlroute-model"] == "edge"
        r = c.post("/v1/chat/completions", json=ask(),               # quality: the cloud
                   headers={**session, "authorization": "Bearer k2"})
        assert r.headers["x-vlroute-model"] == "cloud"


def test_one_row_the_database_refuses_does_not_take_its_batch_with_it(
        tmp_path: Path) -> None:
    import asyncio

    from test_telemetry import row

    from vlroute.serve.telemetry import Recorder

    class Picky(SQLiteStore):
        def write(self, rows: list[dict[str, Any]]) -> None:
            if any(r["id"] == "bad" for r in rows):
                raise sqlite3.IntegrityError("refused")
            super().write(rows)

    store = Picky(f"sqlite:///{tmp_path / 't.db'}")
    recorder = Recorder(store, spool=tmp_path / "t.db.spool")

    async def main() -> None:
        await asyncio.gather(*(recorder.record(row(rid, 1.0)) for rid in ("a", "bad", "b")))
        await recorder.close()

    asyncio.run(main())
    assert sorted(r["id"] for r in store.rows()) == ["a", "b"]
    spooled = list(tmp_path.glob("t.db.spool.*.jsonl"))
    assert len(spooled) == 1 and json.loads(spooled[0].read_text())["id"] == "bad"


def test_an_image_that_opens_but_does_not_decode_is_a_400(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # PIL verifies a PNG with a zeroed IDAT (valid CRC) but cannot decode it: the encoders
    # raise OSError("broken data stream") then, which is the client's image, not a bug
    from vlroute.serve.routing import RoutingEngine

    def broken(self: Any, prompts: Any, scenarios: Any) -> Any:
        raise OSError("broken data stream when reading image file")

    with client(served(tmp_path, bundle(tmp_path, "first")), Upstream()) as c:
        monkeypatch.setattr(RoutingEngine, "router_rows", broken)
        r = c.post("/v1/chat/completions", json=ask("vlroute/auto"))
        assert r.status_code == 400, r.text
        assert envelope(r)["param"] == "image_url"


def test_a_client_that_leaves_after_the_backend_got_the_prompt_pays_for_it(
        tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 't.db'}")
    up = Upstream(cloud=["hold", "ok"])
    payload = json.dumps(ask("cloud", messages=[{"role": "user", "content": "x" * 400}])
                         ).encode()
    with client(config(tmp_path), up, store) as c:
        leave_once_sent(c, up, payload)
    row = store.rows()[0]
    assert row["status"] == 499 and row["chosen"] == "cloud"
    assert row["cost_usd"] == pytest.approx(100 * 2.0 / 1e6)      # 400 chars: 100 tokens in


def test_a_task_hint_reaches_the_router_and_never_the_backend(tmp_path: Path) -> None:
    prior = bundle(tmp_path, "prior-bundle")                 # the bench, then a prior over it
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "prior", str(tmp_path / "bench"), "--features",
                                 "hashing-text,hashing-image", "--out",
                                 str(tmp_path / "prior"), "--scenario", "cost_weight=0"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    up = Upstream()
    with client(served(tmp_path, tmp_path / "prior"), up) as c:
        assert c.get("/health").json()["routing"]["hints"] == ["task"]
        by_task = {}
        for task in ("algebra", "geometry"):
            body = ask("vlroute/auto", metadata={"task": task, "user": "u1"})
            by_task[task] = c.post("/v1/route", json=body).json()["predicted"]
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200
            assert up.seen[-1][1]["metadata"] == {"user": "u1"}       # the hint is stripped
        from vlroute.routers.bundle import load_bundle

        state = load_bundle(tmp_path / "prior").router.state_
        for task, predicted in by_task.items():     # each task's own prior row, no mixture
            row = state["prior"][[str(n) for n in state["names"]].index(task)]
            assert [predicted["edge"], predicted["cloud"]] == pytest.approx(list(row))
        header = c.post("/v1/route", json=ask("vlroute/auto"),
                        headers={"x-vlroute-task": "geometry"}).json()["predicted"]
        assert header == by_task["geometry"]
        c.post("/v1/chat/completions", json=ask("vlroute/auto", metadata={"task": "algebra"}))
        assert "metadata" not in up.seen[-1][1]
        bad = c.post("/v1/route", json=ask("vlroute/auto", metadata={"task": 5}))
        assert bad.status_code == 400 and envelope(bad)["param"] == "x-vlroute-task"
    del prior
