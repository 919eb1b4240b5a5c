"""Telemetry stores (SQLite, and PostgreSQL when ``VLROUTE_TEST_POSTGRES_URL`` names a server:
``.ci/run`` starts Debian's and sets it) and the group-commit recorder."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from vlroute.serve.app import create_app
from vlroute.serve.config import ConfigError, GatewayConfig, load_config
from vlroute.serve.telemetry import Recorder, TelemetryStore, open_store

POSTGRES = os.environ.get("VLROUTE_TEST_POSTGRES_URL")


def _reset_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS requests, budget_spend, budget_holds, sessions")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'telemetry.db'}"
        return
    if not POSTGRES:
        pytest.skip("VLROUTE_TEST_POSTGRES_URL is not set (.ci/run starts a server and sets it)")
    _reset_postgres(POSTGRES)
    yield POSTGRES
    _reset_postgres(POSTGRES)


def row(rid: str, ts: float, key: str | None = "alice", cost: float = 0.5) -> dict[str, Any]:
    return {"id": rid, "ts": ts, "key_id": key, "scenario": "quality", "chosen": "cloud",
            "predicted": {"edge": 0.4, "cloud": 0.8},
            "fallback_path": [{"backend": "cloud", "status": 200}], "status": 200,
            "ttft_ms": 1.5, "total_ms": 3.0, "route_ms": 0.2, "tokens_in": 10,
            "tokens_out": 2, "cost_usd": cost, "prompt": None}


def test_store_round_trip(store_url: str) -> None:
    store = open_store(store_url)
    try:
        store.write([row("a", 100.0), row("b", 200.0, cost=0.25), row("c", 300.0, key="bob")])
        rows = store.rows()
        assert [r["id"] for r in rows] == ["a", "b", "c"]
        assert json.loads(rows[0]["predicted"]) == {"edge": 0.4, "cloud": 0.8}
        assert json.loads(rows[0]["fallback_path"]) == [{"backend": "cloud", "status": 200}]
        assert rows[0]["score"] is None and rows[0]["tokens_in"] == 10
        assert store.feedback("b", 0.75) and not store.feedback("zzz", 1.0)
        assert next(r for r in store.rows() if r["id"] == "b")["score"] == 0.75
        assert store.spent("alice", "1970-01-01") == pytest.approx(0.75)   # ts 100 and 200
        assert store.spent("alice", "1970-01") == pytest.approx(0.75)
        assert store.spent("bob", "1970-01-01") == pytest.approx(0.5)
        assert store.spent("alice", "1970-01-02") == store.spent("carol", "1970-01") == 0.0
    finally:
        store.close()


DAY, MONTH = "2026-11-23", "2026-11"
NOW = 1_795_435_200.0       # 2026-11-23 12:00 UTC


def test_holds_count_until_the_row_books_the_cost(store_url: str) -> None:
    store = open_store(store_url)
    try:
        limits = {DAY: 1.0, MONTH: 1.5}
        assert store.reserve("alice", "r1", 0.6, limits, NOW, NOW + 60) is None
        assert store.reserve("alice", "r2", 0.6, limits, NOW, NOW + 60) == (DAY, 1.0, 0.6)
        store.write([row("r1", NOW, cost=0.1)])              # books 0.1, drops r1's holds
        assert store.spent("alice", DAY) == pytest.approx(0.1)
        assert store.reserve("alice", "r2", 0.6, limits, NOW, NOW + 60) is None
        store.release("r2")                                   # r2 failed: nothing booked
        assert store.reserve("alice", "r3", 0.9, limits, NOW, NOW + 60) is None
        assert store.usage("alice", [DAY], NOW)[DAY] == pytest.approx((0.1, 0.9))
        assert store.usage("alice", [DAY], NOW + 61)[DAY] == pytest.approx((0.1, 0.0))
        over = store.reserve("alice", "r4", 0.6, {MONTH: 1.5}, NOW, NOW + 60)
        assert over is not None and over[:2] == (MONTH, 1.5) and over[2] == pytest.approx(1.0)
        # r3's holder crashed: after its expiry the hold no longer counts
        assert store.reserve("alice", "r5", 0.9, limits, NOW + 61, NOW + 120) is None
        assert store.reserve("bob", "r6", 1.0, limits, NOW, NOW + 60) is None  # per key
    finally:
        store.close()


def test_reservations_from_many_workers_never_overshoot(store_url: str) -> None:
    """Four connections (as four gateway workers) race 20 reservations each."""
    stores = [open_store(store_url) for _ in range(4)]

    def worker(i: int) -> int:
        return sum(stores[i].reserve("alice", f"w{i}-{n}", 0.125, {DAY: 1.0}, NOW, NOW + 60)
                   is None for n in range(20))
    try:
        with ThreadPoolExecutor(4) as pool:
            admitted = sum(pool.map(worker, range(4)))
        assert admitted == 8
    finally:
        for store in stores:
            store.close()


def test_sessions_pin_to_the_first_backend_across_workers(store_url: str) -> None:
    first, second = open_store(store_url), open_store(store_url)
    try:
        assert first.pinned("s1", NOW) is None
        assert first.pin("s1", "edge", NOW) == ("edge", NOW)
        assert second.pin("s1", "cloud", NOW + 1) == ("edge", NOW)   # the first pin wins
        assert second.pinned("s1", NOW + 1) == ("edge", NOW)
        later = NOW + 8 * 86400                                    # a week on: forgotten
        assert first.pinned("s1", later) is None                   # expired, still stored
        assert second.pin("s2", "cloud", later) == ("cloud", later)
        assert second.pin("s1", "cloud", later) == ("cloud", later)  # pinned afresh
    finally:
        first.close()
        second.close()


def test_spend_recorded_before_the_budget_tables_still_counts(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:        # a telemetry file from before budget_spend
        db.execute("CREATE TABLE requests (id TEXT PRIMARY KEY, ts REAL NOT NULL, key_id TEXT, "
                   "cost_usd REAL)")
        db.executemany("INSERT INTO requests VALUES (?, ?, ?, ?)",
                       [("a", NOW, "alice", 0.25), ("b", NOW - 86400, "alice", 0.5),
                        ("c", NOW, None, 9.0), ("d", NOW, "alice", None)])
    store = open_store(f"sqlite:///{path}")
    try:
        assert store.spent("alice", DAY) == pytest.approx(0.25)
        assert store.spent("alice", MONTH) == pytest.approx(0.75)
    finally:
        store.close()
    store = open_store(f"sqlite:///{path}")   # opening again does not count it twice
    try:
        assert store.spent("alice", MONTH) == pytest.approx(0.75)
    finally:
        store.close()


def test_a_failing_batch_writes_nothing_and_a_replayed_row_books_nothing(
        store_url: str) -> None:
    store = open_store(store_url)
    try:
        store.write([row("a", 1.0)])
        broken = {**row("c", 2.0), "ts": None}                    # NOT NULL: the batch fails
        with pytest.raises(Exception, match=r"(?i)null"):
            store.write([row("b", 2.0), broken])
        assert [r["id"] for r in store.rows()] == ["a"]          # and "b" is not half-written
        assert store.spent("alice", "1970-01-01") == pytest.approx(0.5)   # nor its cost
        # a spool replayed twice: "a" is in already, so it is skipped and books nothing
        store.write([row("b", 2.0), row("a", 3.0)])
        assert sorted(r["id"] for r in store.rows()) == ["a", "b"]
        assert store.spent("alice", "1970-01-01") == pytest.approx(0.5 + 0.5)
    finally:
        store.close()


class CountingStore:
    """Wraps a store and counts its write calls (as a remote store: group commit)."""

    local = False

    def __init__(self, inner: TelemetryStore) -> None:
        self.inner, self.url, self.writes = inner, inner.url, 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.writes += 1
        self.inner.write(rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_recorder_commits_concurrent_rows_together(store_url: str) -> None:
    counting = CountingStore(open_store(store_url))

    async def main() -> None:
        recorder = Recorder(counting)
        await asyncio.gather(*(recorder.record(row(f"r{k}", float(k))) for k in range(50)))
        # every record() has returned, so every row is committed
        assert len(counting.inner.rows()) == 50
        await recorder.close()

    asyncio.run(main())
    assert 1 <= counting.writes < 50            # group commit: fewer commits than rows
    counting.inner.close()


def test_gateway_records_into_the_configured_store(store_url: str, tmp_path: Path) -> None:
    from tests.test_serve import Upstream, ask

    cfg = GatewayConfig.model_validate({
        "backends": [{"name": "edge", "base_url": "http://edge.test/v1", "model": "small",
                      "tier": "edge", "prior_quality": 0.95}],
        "telemetry": {"url": store_url}})
    with TestClient(create_app(cfg, transport=Upstream())) as c:
        ids = [c.post("/v1/chat/completions", json=ask()).headers["x-vlroute-request-id"]
               for _ in range(3)]
        assert c.post("/v1/feedback", json={"request_id": ids[1], "score": 1}).status_code \
            == 200
    store = open_store(store_url)            # reopened: the rows outlive the app
    try:
        rows = {r["id"]: r for r in store.rows()}
        assert set(ids) <= set(rows) and rows[ids[1]]["score"] == 1.0
        assert all(rows[i]["chosen"] == "edge" and rows[i]["status"] == 200 for i in ids)
    finally:
        store.close()


def test_bad_store_urls_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected sqlite:///PATH or postgresql://"):
        open_store("mysql://x/y")
    with pytest.raises(ConfigError, match=r"cannot connect") as info:
        open_store("postgresql://someone:hunter2@127.0.0.1:1/none")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_a_password_in_the_config_file_is_refused(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("backends: [{name: a, base_url: 'http://a/v1', model: m}]\n"
                    "telemetry: {url: 'postgresql://u:secret@db/vlroute'}\n")
    with pytest.raises(ConfigError, match="PGPASSWORD"):
        load_config(path)
    path.write_text("backends: [{name: a, base_url: 'http://a/v1', model: m}]\n"
                    "telemetry: {url: 'postgresql://u@db/vlroute'}\n")
    assert load_config(path).telemetry.url == "postgresql://u@db/vlroute"
    monkeypatch.setenv("VLROUTE_TELEMETRY_URL", "postgresql://u:secret@db/other")
    assert load_config(path).telemetry.url.endswith("/other")


def test_postgres_store_reconnects_after_losing_its_connection() -> None:
    if not POSTGRES:
        pytest.skip("VLROUTE_TEST_POSTGRES_URL is not set (.ci/run starts a server and sets it)")
    import psycopg

    _reset_postgres(POSTGRES)
    store = open_store(POSTGRES)
    try:
        store.write([row("a", 1.0)])
        with psycopg.connect(POSTGRES, autocommit=True) as admin:   # as a server restart would
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "datname = current_database() AND pid <> pg_backend_pid()")
        store.write([row("b", 2.0)])
        assert [r["id"] for r in store.rows()] == ["a", "b"]
    finally:
        store.close()
        _reset_postgres(POSTGRES)
