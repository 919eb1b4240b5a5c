"""The gateway in-process, in front of a mocked upstream (a scripted Transport)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vlroute.serve.app import create_app
from vlroute.serve.config import ConfigError, GatewayConfig, hash_key, load_config
from vlroute.serve.requests import RequestError
from vlroute.serve.telemetry import SQLiteStore
from vlroute.serve.upstream import UpstreamError

ROOT = Path(__file__).resolve().parents[1]


def config(tmp_path: Path, **extra: Any) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "backends": [
            {"name": "edge", "base_url": "http://edge.test/v1", "model": "small", "tier": "edge",
             "prior_quality": 0.7, "latency_s": 3.0},
            {"name": "cloud", "base_url": "http://cloud.test/v1", "model": "big",
             "price_in_per_1m": 2.0, "price_out_per_1m": 8.0, "prior_quality": 0.9}],
        "telemetry": {"url": f"sqlite:///{tmp_path / 't.db'}"}, **extra})


class Upstream:
    """Scripted backends: per host a list of behaviours, consumed in order (the last one
    repeats): "ok", "sse", "500", "429", "timeout", "garbage", "broken" (the body breaks),
    "stall" (a 200 stream whose first read times out), "sse-error" (a 200 stream that opens
    with an error event), "empty" (a 200 stream with no body), "ctx" (a 400: the prompt is
    over the context length), "400" (another 400)."""

    def __init__(self, **script: list[str]) -> None:
        self.script = script
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.release = threading.Event()
        self.cancelled: list[str] = []
        self.replies: list[Reply] = []

    async def post(self, url: str, payload: bytes, headers: dict[str, str],
                   timeout_s: float) -> Reply:
        host = url.split("//")[1].split(".")[0]
        body = json.loads(payload)
        self.seen.append((host, body))
        plan = self.script.get(host, ["ok"])
        what = plan.pop(0) if len(plan) > 1 else plan[0]
        if what == "timeout":
            raise UpstreamError("ConnectTimeout")
        if what == "hold":            # answer once the test lets go
            try:
                deadline = time.monotonic() + 10      # a test that forgets to let go fails
                while not self.release.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.cancelled.append(host)
                raise
        if what in ("500", "429", "401", "403", "404"):
            return Reply(int(what), {"error": {"message": what}})
        if what == "no-usage":       # an answer that says nothing of its tokens
            return Reply(200, {"id": "x", "choices": [{"index": 0, "message": {
                "role": "assistant", "content": "hi"}}]})
        if what == "bad-usage":      # negative counts would credit a budget
            return Reply(200, {"id": "x", "choices": [], "usage": {
                "prompt_tokens": -5000, "completion_tokens": -9}})
        if what == "cut":            # a stream that breaks after its first chunk
            return Reply(200, b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
                              b'data: {"choices":[{"delta":{"content":" there"}}]}\n\n',
                         "text/event-stream", cut=True)
        if what == "429-later":      # asks for longer than the gateway waits
            return Reply(429, {"error": {"message": "slow down"}}, extra={"retry-after": "30"})
        if what == "429-soon":
            return Reply(429, {"error": {"message": "slow down"}},
                         extra={"retry-after-ms": "20"})
        if what == "garbage":
            return Reply(200, b"\x00not json")
        if what == "sse":
            return Reply(200, b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
                              b"data: [DONE]\n\n", "text/event-stream")
        if what == "broken":
            return Reply(200, b"", broken=True)
        if what == "stall":
            return Reply(200, b"data: never\n\n", "text/event-stream", broken=True)
        if what == "sse-error":
            return Reply(200, b'data: {"error": {"message": "CUDA out of memory"}}\n\n',
                         "text/event-stream")
        if what == "sse-usage":      # the usage event OpenAI-compatible servers send last
            return Reply(200, b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
                              b'data: {"choices":[],"usage":{"prompt_tokens":40,'
                              b'"completion_tokens":5}}\n\ndata: [DONE]\n\n',
                         "text/event-stream")
        if what == "ctx":            # vLLM's words for a prompt over the context length
            return Reply(400, {"object": "error", "type": "BadRequestError", "code": 400,
                               "message": "This model's maximum context length is 4096 "
                                          "tokens. However, you requested 9000 tokens."})
        if what == "400":
            return Reply(400, {"error": {"message": "unsupported parameter 'logit_bias'"}})
        if what == "empty":
            return Reply(200, b"", "text/event-stream")
        if what == "sse-slow":       # headers at once, the first chunk once the test lets go
            reply = Reply(200, b"data: late\n\n", "text/event-stream", hold=self)
            self.replies.append(reply)
            return reply
        return Reply(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant",
                                                    "content": f"from {host}"}}],
                           "usage": {"prompt_tokens": 12, "completion_tokens": 3}})

    async def close(self) -> None:
        self.closed = True


class Reply:
    """A scripted upstream response (JSON unless bytes are given)."""

    def __init__(self, status: int, content: Any, media: str = "application/json",
                 broken: bool = False, hold: Upstream | None = None,
                 extra: dict[str, str] | None = None, cut: bool = False) -> None:
        self.status = status
        self.cut = cut
        self.headers = {"content-type": media, **(extra or {})}
        self.content = content if isinstance(content, bytes) else json.dumps(content).encode()
        self.broken = broken
        self.hold = hold
        self.released = False

    async def read(self) -> bytes:
        if self.broken:
            raise UpstreamError("ServerDisconnectedError")
        return self.content

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.broken:
            raise UpstreamError("SocketTimeoutError")
        if self.hold is not None:
            try:
                deadline = time.monotonic() + 10
                while not self.hold.release.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.hold.cancelled.append("edge")
                raise
        for line in self.content.split(b"\n\n"):
            if line:
                yield line + b"\n\n"
        if self.cut:
            raise UpstreamError("ServerDisconnectedError")

    def release(self) -> None:
        self.released = True


def client(cfg: GatewayConfig, upstream: Upstream, store: SQLiteStore | None = None
           ) -> TestClient:
    return TestClient(create_app(cfg, transport=upstream, store=store))


def ask(model: str = "vlroute/quality", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "What is 2 + 2?"}],
            **extra}


def png_url(size: tuple[int, int] = (32, 24)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed by Prometheus' own parser (which rejects a malformed exposition)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_routes_answers_with_headers_and_records_telemetry(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 't.db'}")
    up = Upstream()
    with client(config(tmp_path), up, store) as c:
        r = c.post("/v1/chat/completions", json=ask())
        assert r.status_code == 200, r.text
        # quality preset: tau 0.8; edge (0.7) is not sure enough, cloud (0.9) is
        assert r.headers["x-vlroute-model"] == "cloud" and up.seen[-1][1]["model"] == "big"
        assert r.headers["x-vlroute-scenario"] == "quality"
        assert float(r.headers["x-vlroute-predicted-score"]) == pytest.approx(0.9)
        assert float(r.headers["x-vlroute-est-cost-usd"]) > 0
        assert float(r.headers["x-vlroute-route-ms"]) >= 0
        r = c.post("/v1/chat/completions", json=ask("vlroute/mes=6,tau=0.6,by=usd"))
        assert r.headers["x-vlroute-model"] == "edge"                 # cheap and sure enough
        r = c.post("/v1/chat/completions", json=ask("cloud"))         # a backend: no routing
        assert r.headers["x-vlroute-model"] == "cloud"
        rid = r.headers["x-vlroute-request-id"]
        assert c.post("/v1/feedback", json={"request_id": rid, "score": 0.5}).json()["ok"]
        assert c.post("/v1/feedback", json={"request_id": "nope", "score": 1}).status_code == 404
        samples = scrape(c.get("/metrics").text)
        assert samples["vlroute_requests_total", ()] == 3
        assert samples["vlroute_request_seconds_count", ()] == 3
        assert samples["vlroute_request_seconds_bucket", (("le", "+Inf"),)] == 3
        assert samples["vlroute_route_seconds_count", ()] == 2         # two were routed
        assert samples["vlroute_decisions_total", (("model", "cloud"),)] == 2
        assert samples["vlroute_ttft_seconds_count", (("model", "edge"),)] == 1
        assert samples["vlroute_backend_up", (("model", "edge"),)] == 1
        assert samples["vlroute_backend_in_flight", (("model", "cloud"),)] == 0
        # usage 12 + 3 tokens per answer; the cloud costs $2 / $8 per 1M, the edge nothing
        assert samples["vlroute_cost_usd_total", (("model", "cloud"),)] == \
            pytest.approx(2 * (12 * 2 + 3 * 8) / 1e6)
        assert samples["vlroute_cost_usd_total", (("model", "edge"),)] == 0
        assert samples["vlroute_tokens_total", (("kind", "prompt"), ("model", "cloud"))] == 24
        assert samples["vlroute_tokens_total", (("kind", "completion"), ("model", "edge"))] == 3
    rows = store.rows()
    assert [r["chosen"] for r in rows] == ["cloud", "edge", "cloud"]
    assert rows[0]["tokens_in"] == 12 and rows[0]["cost_usd"] == pytest.approx(
        (12 * 2 + 3 * 8) / 1e6)
    assert rows[-1]["score"] == 0.5 and rows[0]["prompt"] is None


def test_falls_back_on_timeouts_and_5xx_and_retries_429(tmp_path: Path) -> None:
    up = Upstream(cloud=["timeout"], edge=["500"])
    with client(config(tmp_path), up) as c:
        r = c.post("/v1/chat/completions", json=ask())
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
    up = Upstream(cloud=["500"])
    with client(config(tmp_path), up) as c:
        r = c.post("/v1/chat/completions", json=ask())
        assert r.status_code == 200 and r.headers["x-vlroute-model"] == "edge"
        assert scrape(c.get("/metrics").text)["vlroute_fallbacks_total", ()] == 1
    up = Upstream(cloud=["429", "ok"])
    with client(config(tmp_path), up) as c:
        r = c.post("/v1/chat/completions", json=ask())
        assert r.headers["x-vlroute-model"] == "cloud"
        assert [h for h, _ in up.seen] == ["cloud", "cloud"]
    up = Upstream(cloud=["429-soon", "ok"])            # waits the 20 ms it asks for
    with client(config(tmp_path), up) as c:
        assert c.post("/v1/chat/completions", json=ask()).headers["x-vlroute-model"] == "cloud"
        assert [h for h, _ in up.seen] == ["cloud", "cloud"]
    up = Upstream(cloud=["429-later", "ok"])           # 30 s: over the 2 s wait, next one
    with client(config(tmp_path), up) as c:
        start = time.monotonic()
        r = c.post("/v1/chat/completions", json=ask())
        assert r.headers["x-vlroute-model"] == "edge" and time.monotonic() - start < 1.5
        assert [h for h, _ in up.seen] == ["cloud", "edge"]


def test_retry_wait_reads_what_the_backend_asks_for() -> None:
    from email.utils import format_datetime

    from vlroute.serve.upstream import retry_wait

    assert retry_wait({"retry-after-ms": "250"}, 0) == 0.25
    assert retry_wait({"retry-after": "3"}, 0) == 3.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    assert 8 < retry_wait({"retry-after": soon}, 0) <= 10
    assert retry_wait({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0) == 0.0   # past
    assert retry_wait({}, 0) == 0.1 and retry_wait({}, 2) == 0.4 and retry_wait({}, 9) == 1.0
    assert retry_wait({"retry-after": "soon-ish", "retry-after-ms": "x"}, 1) == 0.2


def test_a_backend_at_max_concurrency_is_passed_over_or_waited_for(tmp_path: Path) -> None:
    cfg = GatewayConfig.model_validate({**config(tmp_path).model_dump(), "backends": [
        {**b.model_dump(), "max_concurrency": 1, "timeout_s": 0.3}
        for b in config(tmp_path).backends]})
    store = SQLiteStore(f"sqlite:///{tmp_path / 'slots.db'}")
    up = Upstream(edge=["hold", "ok"])
    with client(cfg, up, store) as c:
        held: dict[str, Any] = {}
        first = threading.Thread(target=lambda: held.update(
            r=c.post("/v1/chat/completions", json=ask("edge"))))
        first.start()
        while not up.seen:                     # the edge's only slot is taken
            time.sleep(0.01)
        assert c.get("/health").json()["backends"]["edge"]["in_flight"] == 1
        # a scenario that prefers the edge spills over to the cloud
        spill = c.post("/v1/chat/completions", json=ask("vlroute/mes=6,tau=0.6,by=usd"))
        assert spill.status_code == 200 and spill.headers["x-vlroute-model"] == "cloud"
        # naming the busy edge directly waits for a slot, up to its timeout
        busy = c.post("/v1/chat/completions", json=ask("edge"))
        assert busy.status_code == 502 and "busy" in busy.json()["error"]["message"]
        up.release.set()
        first.join(10)
        assert held["r"].status_code == 200 and held["r"].headers["x-vlroute-model"] == "edge"
        assert c.get("/health").json()["backends"]["edge"]["in_flight"] == 0
        after = c.post("/v1/chat/completions", json=ask("vlroute/mes=6,tau=0.6,by=usd"))
        assert after.headers["x-vlroute-model"] == "edge"
    paths = [json.loads(r["fallback_path"]) for r in store.rows()]
    assert [{"backend": "edge", "error": "busy"}, {"backend": "cloud", "status": 200}] in paths


def test_circuit_breaker_takes_a_failing_backend_out(tmp_path: Path) -> None:
    up = Upstream(cloud=["500"])
    with client(config(tmp_path), up) as c:
        for _ in range(3):
            c.post("/v1/chat/completions", json=ask())
        health = c.get("/health").json()
        assert health["backends"]["cloud"]["up"] is False
        before = len(up.seen)
        r = c.post("/v1/chat/completions", json=ask())
        assert r.headers["x-vlroute-model"] == "edge" and len(up.seen) == before + 1


def test_streaming_passes_sse_through(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'sse.db'}")
    with client(config(tmp_path), Upstream(cloud=["sse", "sse-usage"]), store) as c:
        with c.stream("POST", "/v1/chat/completions", json=ask(stream=True)) as r:
            body = b"".join(r.iter_bytes())
        assert r.headers["content-type"].startswith("text/event-stream")
        assert body.endswith(b"data: [DONE]\n\n") and b'"hi"' in body
        estimate = float(r.headers["x-vlroute-est-cost-usd"])
        with c.stream("POST", "/v1/chat/completions", json=ask(stream=True)) as r:
            assert b'"usage"' in b"".join(r.iter_bytes())    # passed through unchanged
    no_usage, usage = store.rows()
    assert no_usage["cost_usd"] == pytest.approx(estimate) and no_usage["tokens_in"] is None
    assert (usage["tokens_in"], usage["tokens_out"]) == (40, 5)       # booked from the event
    assert usage["cost_usd"] == pytest.approx((40 * 2 + 5 * 8) / 1e6)


@pytest.mark.parametrize("failure", ["stall", "sse-error", "empty", "500"])
def test_a_stream_falls_back_until_its_first_chunk(tmp_path: Path, failure: str) -> None:
    """Nothing has reached the client before the first chunk: a stream that stalls, opens
    with an error event or ends empty moves on to the next backend, like a 5xx."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'streams.db'}")
    up = Upstream(cloud=[failure], edge=["sse"])
    with client(config(tmp_path), up, store) as c:
        with c.stream("POST", "/v1/chat/completions", json=ask(stream=True)) as r:
            body = b"".join(r.iter_bytes())
        assert r.status_code == 200 and r.headers["x-vlroute-model"] == "edge"
        assert body.endswith(b"data: [DONE]\n\n") and b'"hi"' in body
        health = c.get("/health").json()["backends"]
        assert health["cloud"]["in_flight"] == health["edge"]["in_flight"] == 0
        assert health["cloud"]["failures"] == 1
    path = json.loads(store.rows()[0]["fallback_path"])
    assert [p["backend"] for p in path] == ["cloud", "edge"]
    if failure == "sse-error":
        assert "CUDA out of memory" in path[0]["error"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_over_the_edge_context_goes_to_the_next_backend(tmp_path: Path,
                                                                 stream: bool) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'ctx.db'}")
    cheap = ask("vlroute/mes=6,tau=0.6,by=usd", stream=stream)     # the edge first
    up = Upstream(edge=["ctx", "400"], cloud=["sse" if stream else "ok"])
    with client(config(tmp_path), up, store) as c:
        r = c.post("/v1/chat/completions", json=cheap)
        assert r.status_code == 200 and r.headers["x-vlroute-model"] == "cloud"
        assert (b"data: [DONE]" in r.content) == stream
        assert c.get("/health").json()["backends"]["edge"]["failures"] == 0  # not unhealthy
        other = c.post("/v1/chat/completions", json=cheap)       # any other 4xx: the answer
        assert other.status_code == 400 and other.headers["x-vlroute-model"] == "edge"
        assert "logit_bias" in other.json()["error"]["message"]
    path = json.loads(store.rows()[0]["fallback_path"])
    assert path == [{"backend": "edge", "status": 400, "error": "context length exceeded"},
                    {"backend": "cloud", "status": 200}]


@pytest.mark.parametrize(("payload", "status", "message"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"model": "vlroute/quality"}).encode(), 400, "'messages'"),
    (json.dumps({"model": 3, "messages": [{"role": "user", "content": "x"}]}).encode(), 400,
     "'model' must be a string"),
    (json.dumps(ask("vlroute/turbo")).encode(), 400, "Unknown scenario preset"),
    (json.dumps({"model": "vlroute/quality", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}]}]}).encode(),
     400, "not valid base64"),
    (json.dumps({"model": "vlroute/quality", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                            + base64.b64encode(b"hello").decode()}}]}]}
                ).encode(), 400, "does not decode"),
    (json.dumps({"model": "vlroute/quality", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}}]}]}
                ).encode(), 400, "remote image URLs are disabled"),
    (json.dumps(ask(pad="x" * 30_000)).encode(), 413, "over the limit"),
])
def test_bad_requests_get_a_clear_4xx(tmp_path: Path, payload: bytes, status: int,
                                      message: str) -> None:
    cfg = config(tmp_path, limits={"max_body_bytes": 20_000})
    with client(cfg, Upstream()) as c:
        r = c.post("/v1/chat/completions", content=payload,
                   headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert message in r.json()["error"]["message"]


def test_an_image_pillow_fails_on_with_any_error_is_a_400(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's checks raise more than OSError (a corrupt AVIF: RuntimeError "Missing or
    empty image item"): any of them is the client's bad image."""
    from PIL import PngImagePlugin

    def verify(self: Any) -> None:
        raise RuntimeError("Missing or empty image item")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "verify", verify)
    body = {"model": "vlroute/quality", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png_url()}}]}]}
    with client(config(tmp_path), Upstream()) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 400 and "does not decode" in r.json()["error"]["message"]


def test_images_and_conversations_route_and_sessions_pin(tmp_path: Path) -> None:
    up = Upstream()
    with client(config(tmp_path), up) as c:
        image_only = {"model": "vlroute/mes=6,tau=0.6", "messages": [
            {"role": "user", "content": "Earlier question"},
            {"role": "assistant", "content": "Earlier answer"},
            {"role": "user", "content": [{"type": "image_url",
                                          "image_url": {"url": png_url()}}]}]}
        r = c.post("/v1/route", json=image_only)
        assert r.status_code == 200 and r.json()["model"] == "edge"
        assert set(r.json()["predicted"]) == {"edge", "cloud"}
        headers = {"x-vlroute-session": "s1"}
        first = c.post("/v1/chat/completions", json=image_only, headers=headers)
        later = c.post("/v1/chat/completions", json=ask(), headers=headers)  # would be cloud
        assert first.headers["x-vlroute-model"] == later.headers["x-vlroute-model"] == "edge"
        models = {m["id"] for m in c.get("/v1/models").json()["data"]}
        assert {"vlroute/fast", "vlroute/quality", "vlroute/eco", "edge", "cloud"} <= models
    with client(config(tmp_path), up) as c:        # another worker, or after a restart
        again = c.post("/v1/chat/completions", json=ask(), headers=headers)
        assert again.headers["x-vlroute-model"] == "edge"
        other = c.post("/v1/chat/completions", json=ask(), headers={"x-vlroute-session": "s2"})
        assert other.headers["x-vlroute-model"] == "cloud"


def test_session_pins_expire_and_odd_session_ids_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vlroute.serve.gateway as app_module
    import vlroute.serve.stores as stores_module

    cheap = {"model": "vlroute/mes=6,tau=0.6", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-vlroute-session": "s1"}
    with client(config(tmp_path), Upstream()) as c:
        assert c.post("/v1/chat/completions", json=cheap,
                      headers=headers).headers["x-vlroute-model"] == "edge"
        # a week on (the TTL run out): the pin is gone, in memory and in the database
        monkeypatch.setattr(app_module, "SESSION_TTL_S", -1.0)
        monkeypatch.setattr(stores_module, "SESSION_TTL_S", -1.0)
        r = c.post("/v1/chat/completions", json=ask(), headers=headers)
        assert r.headers["x-vlroute-model"] == "cloud"
        long = c.post("/v1/chat/completions", json=ask(), headers={"x-vlroute-session": "x" * 300})
        assert long.status_code == 400 and "x-vlroute-session" in long.json()["error"]["message"]


def test_text_only_and_small_context_backends_are_left_out(tmp_path: Path) -> None:
    cfg = GatewayConfig.model_validate({
        "backends": [
            {"name": "edge", "base_url": "http://edge.test/v1", "model": "small", "tier": "edge",
             "prior_quality": 0.7, "vision": False, "context_tokens": 1024},
            {"name": "cloud", "base_url": "http://cloud.test/v1", "model": "big",
             "price_in_per_1m": 2.0, "price_out_per_1m": 8.0, "prior_quality": 0.9}],
        "telemetry": {"url": f"sqlite:///{tmp_path / 't.db'}"}})
    cheap = "vlroute/mes=6,tau=0.6,by=usd"        # picks the edge whenever it may
    image = [{"type": "text", "text": "What is shown?"},
             {"type": "image_url", "image_url": {"url": png_url()}}]
    up = Upstream()
    with client(cfg, up) as c:
        def route(content: Any, **extra: Any) -> dict[str, Any]:
            r = c.post("/v1/route", json={"model": cheap, "messages": [
                {"role": "user", "content": content}], **extra})
            assert r.status_code == 200, r.text
            return dict(r.json())

        assert route("2 + 2?")["model"] == "edge" and route("2 + 2?")["left_out"] == {}
        with_image = route(image)
        assert with_image["model"] == "cloud" and with_image["fallback_order"] == ["cloud"]
        assert "text-only" in with_image["left_out"]["edge"]
        long = route("word " * 1000)                  # about 1,250 tokens: over the edge's
        assert long["model"] == "cloud" and "context window of 1024" in long["left_out"]["edge"]
        assert route("2 + 2?", max_tokens=2000)["model"] == "cloud"   # no room to answer
        assert route("2 + 2?", max_tokens=500)["model"] == "edge"
        r = c.post("/v1/chat/completions", json={"model": cheap, "messages": [
            {"role": "user", "content": image}]})
        assert r.status_code == 200 and r.headers["x-vlroute-model"] == "cloud"
        assert [host for host, _ in up.seen] == ["cloud"]          # the edge never saw it
        direct = c.post("/v1/chat/completions", json={"model": "edge", "messages": [
            {"role": "user", "content": image}]})
        assert direct.status_code == 400 and "text-only" in direct.json()["error"]["message"]
        assert scrape(c.get("/metrics").text)["vlroute_left_out_total",
                                              (("model", "edge"),)] == 1

    backends = [dict(b, vision=False, context_tokens=1024) for b in
                cfg.model_dump(mode="json")["backends"]]
    small = GatewayConfig.model_validate({**cfg.model_dump(mode="json"), "backends": backends})
    up = Upstream()
    with client(small, up) as c:
        r = c.post("/v1/chat/completions", json={"model": cheap, "messages": [
            {"role": "user", "content": image}]})
        assert r.status_code == 400 and "no backend of this gateway" in r.text
        assert "edge: text-only" in r.json()["error"]["message"] and not up.seen
        # no window fits by the estimate (which is rough): the backends judge the size
        r = c.post("/v1/chat/completions", json=ask(cheap, messages=[
            {"role": "user", "content": "word " * 1000}]))
        assert r.status_code == 200 and up.seen


def huge_png_url(width: int, height: int) -> str:
    """A small PNG whose header says ``width`` x ``height`` (what a decompression bomb
    shows before it is decoded)."""
    import struct
    import zlib

    data = bytearray(base64.b64decode(png_url((8, 8)).partition(",")[2]))
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = ihdr[4:12]
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return "data:image/png;base64," + base64.b64encode(bytes(data)).decode()


@pytest.mark.parametrize(("limit", "url", "message"), [
    (None, huge_png_url(10_000, 5_000), "10000 x 5000 pixels is over the limit of 40000000"),
    (None, huge_png_url(20_000, 20_000), "over the limit of 40000000 pixels (Image size "
                                         "(400000000 pixels) exceeds limit"),       # PIL's
    (500, png_url(), "32 x 24 pixels is over the limit of 500")])
def test_images_over_the_pixel_limit_get_a_413(tmp_path: Path, limit: int | None, url: str,
                                               message: str) -> None:
    cfg = config(tmp_path, limits={"max_image_pixels": limit} if limit else {})
    up = Upstream()
    with client(cfg, up) as c:
        r = c.post("/v1/chat/completions", json={"model": "vlroute/quality", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]})
        assert r.status_code == 413 and message in r.json()["error"]["message"], r.text
        assert not up.seen


def test_image_tokens_follow_each_backends_catalog_rule(tmp_path: Path) -> None:
    from vlroute.serve.requests import Prompt, prompt_of, prompt_tokens
    from vlroute.serve.routing import RoutingEngine

    cfg = GatewayConfig.model_validate({
        "backends": [
            {"name": "qwen", "base_url": "http://edge.test/v1", "model": "small",
             "image_tokens": "qwen2-vl", "context_tokens": 1024},
            {"name": "gemini", "base_url": "http://cloud.test/v1", "model": "big",
             "image_tokens": "gemini", "price_in_per_1m": 1.0},
            {"name": "flat", "base_url": "http://flat.test/v1", "model": "x",
             "image_tokens": 100}, {"name": "plain", "base_url": "http://p.test/v1",
                                    "model": "y"}],
        "telemetry": {"url": f"sqlite:///{tmp_path / 't.db'}"}})
    big, small = png_url((1400, 1400)), png_url((56, 56))
    prompt = prompt_of({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "abcd" * 10},
        {"type": "image_url", "image_url": {"url": big}}]}]}, cfg)
    assert prompt.sizes == ((1400, 1400),)
    qwen, gemini, flat, plain = cfg.backends
    # Qwen2-VL: 1400 px is brought under 1,003,520 pixels in 28 px steps: 35 x 35 + 2
    assert prompt_tokens(prompt, qwen) == 10 + 35 * 35 + 2
    assert prompt_tokens(prompt, gemini) == 10 + 258
    assert prompt_tokens(prompt, flat) == 10 + 100 and prompt_tokens(prompt, plain) == 10 + 765
    assert prompt_tokens(Prompt("abcd", prompt.images), qwen) == 1 + 765     # size unknown
    engine = RoutingEngine(cfg)
    assert engine.estimate_cost(gemini, prompt, 0) == pytest.approx(268 / 1e6)
    assert "needs about 1237" in engine.unfit(prompt)["qwen"]        # over its 1,024
    tiny = prompt_of({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": small}}]}]}, cfg)
    assert engine.unfit(tiny) == {}                                     # 2 x 2 + 2 tokens
    with pytest.raises(ValueError, match="image_tokens must be a number or one of"):
        GatewayConfig.model_validate({"backends": [
            {"name": "a", "base_url": "http://a.test/v1", "model": "m",
             "image_tokens": "qwen3"}]})


def test_api_keys_are_checked_against_hashes(tmp_path: Path) -> None:
    cfg = config(tmp_path, auth_keys=[{"id": "alice", "sha256": hash_key("s3cret")}])
    with client(cfg, Upstream()) as c:
        assert c.post("/v1/chat/completions", json=ask()).status_code == 401
        bad = c.post("/v1/chat/completions", json=ask(),
                     headers={"authorization": "Bearer wrong"})
        assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"
        ok = c.post("/v1/chat/completions", json=ask(),
                    headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("backends:\n  - name: a\n    base_url: ftp://x\n    model: m\n")
    with pytest.raises(ConfigError, match=r"backends\.0\.base_url"):
        load_config(path)
    path.write_text("backends: []\n")
    with pytest.raises(ConfigError, match="backends"):
        load_config(path)
    example = load_config(ROOT / "examples" / "gateway.yaml")
    assert [b.name for b in example.backends] == ["edge", "cloud"]
    assert example.scenario("vlroute/edge-first").edge_first


def test_openapi_document_is_published(tmp_path: Path) -> None:
    with client(config(tmp_path), Upstream()) as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert {"/v1/chat/completions", "/v1/route", "/v1/models", "/health", "/metrics",
            "/v1/feedback"} <= set(paths)


def test_serves_a_trained_router_artifact(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from conftest import make_set

    from vlroute.cli import cli

    models = [{"model": m, "display_name": m, "family": "F", "params_b": p,
               "open_weights": True, "modality": "vision-language", "notes": ""}
              for m, p in (("Qwen2-VL-7B-Instruct", 7), ("Qwen2-VL-72B-Instruct", 72))]
    toy = make_set(tmp_path / "toy", n_groups=12, models=models)
    runner = CliRunner()
    for args in (["bench", "build", toy, "--out", tmp_path / "b"],
                 ["features", tmp_path / "b", "--text", "hashing-text", "--image",
                  "hashing-image"],
                 ["train", "knn", tmp_path / "b", "--features", "hashing-text,hashing-image",
                  "--param", "n_neighbors=3", "--out", tmp_path / "art"]):
        result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    base = config(tmp_path)
    cfg = GatewayConfig.model_validate({
        **base.model_dump(), "router": {"artifact": tmp_path / "art",
                                        "text_encoder": "hashing-text",
                                        "image_encoder": "hashing-image"},
        "backends": [
            {**b.model_dump(), "router_model": m}
            for b, m in zip(base.backends, ("Qwen2-VL-7B-Instruct", "Qwen2-VL-72B-Instruct"),
                            strict=True)]})
    with client(cfg, Upstream()) as c:
        assert c.get("/health").json()["router"] == "KNNRouter"
        body = {"model": "vlroute/quality", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is shown?"},
            {"type": "image_url", "image_url": {"url": png_url()}}]}]}
        decision = c.post("/v1/route", json=body).json()
        assert decision["predicted"] != {"edge": 0.7, "cloud": 0.9}         # not the priors
        assert all(0 <= p <= 1 for p in decision["predicted"].values())
        text_only = c.post("/v1/chat/completions", json=ask())               # no image at all
        assert text_only.status_code == 200, text_only.text
    # predictions in a batch are those of one request at a time
    from vlroute.serve.requests import Prompt, prompt_of
    from vlroute.serve.routing import RoutingEngine

    engine = RoutingEngine.from_config(cfg)
    prompts = [prompt_of(body, cfg), Prompt("What is 2 + 2?"), Prompt("A longer question.")]
    scenarios = [cfg.scenario("quality"), cfg.scenario("cost_weight=0.1"),
                 cfg.scenario("quality")]
    together = engine.router_rows(prompts, scenarios)
    for prompt, scenario, row in zip(prompts, scenarios, together, strict=True):
        assert np.allclose(engine.router_rows([prompt], [scenario])[0], row)
    wrong = GatewayConfig.model_validate({**cfg.model_dump(), "router": {
        "artifact": tmp_path / "art", "text_encoder": "hashing-text", "image_encoder": None}})
    with pytest.raises(ConfigError, match="trained on image features"), \
            client(wrong, Upstream()):
        pass


def test_scored_traffic_exports_as_a_set_that_builds(tmp_path: Path) -> None:
    from vlroute.data import READERS, build_bench
    from vlroute.serve.export import export_scored

    store = SQLiteStore(f"sqlite:///{tmp_path / 't.db'}")
    cfg = config(tmp_path, telemetry={"url": f"sqlite:///{tmp_path / 't.db'}",
                                      "store_prompts": True})
    with client(cfg, Upstream(), store) as c:
        ids = []
        for k in range(6):
            r = c.post("/v1/chat/completions", json={"model": "vlroute/mes=6,tau=0.6" if k % 2
                                                     else "vlroute/quality", "messages": [
                {"role": "user", "content": f"question {k}"}]})
            ids.append(r.headers["x-vlroute-request-id"])
        for rid, score in zip(ids[:5], (1.0, 0.0, 0.5, 1.0, 0.25), strict=True):
            c.post("/v1/feedback", json={"request_id": rid, "score": score})
    counts = export_scored(store, tmp_path / "served")
    assert counts == {"exported": 5, "unscored": 1, "no_prompt": 0}
    bench = build_bench(READERS.get("jsonl")(tmp_path / "served", tmp_path / ".w"),
                        tmp_path / "bench")
    assert len(bench.samples) == 5 and set(bench.models["model"]) == {"edge", "cloud"}


def test_budgets_reserve_before_and_book_the_cost_after(tmp_path: Path) -> None:
    import asyncio
    import datetime as dt

    from vlroute.serve.budgets import Budgets
    from vlroute.serve.config import AuthKey
    from vlroute.serve.telemetry import Recorder

    now = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
    store = SQLiteStore(f"sqlite:///{tmp_path / 'budgets.db'}")
    budgets = Budgets([AuthKey(id="alice", sha256="0" * 64, budget_usd_day=1.0),
                       AuthKey(id="bob", sha256="1" * 64)], Recorder(store))

    async def scenario() -> None:
        assert await budgets.reserve("alice", "r1", 0.6, now)
        with pytest.raises(RequestError, match="over its daily budget of \\$1 for 2026-11-23"):
            await budgets.reserve("alice", "r2", 0.6, now)   # concurrent: r1 still holds 0.6
        store.write([{"id": "r1", "ts": now.timestamp(), "key_id": "alice",
                      "cost_usd": 0.1}])                       # r1 cost less than estimated
        assert await budgets.reserve("alice", "r3", 0.6, now)  # 0.1 spent + 0.6 fits
        await budgets.release("r3")                            # r3 failed: nothing booked
        assert await budgets.reserve("alice", "r4", 0.9, now)  # 0.1 + 0.9 fits exactly
        assert not await budgets.reserve("bob", "r5", 99.0, now)   # no budget: nothing held
    asyncio.run(scenario())
    assert store.spent("alice", "2026-11-23") == pytest.approx(0.1)
    store.close()

    key = "s3cret"
    cfg = config(tmp_path, auth_keys=[{"id": "alice", "sha256": hash_key(key),
                                       "budget_usd_day": 0.0021}])
    auth = {"authorization": f"Bearer {key}"}
    up = Upstream()
    with client(cfg, up) as c:
        # the hold covers the client's max_tokens: 1,000 output tokens at $8/1M cannot fit
        long = c.post("/v1/chat/completions", json=ask(max_tokens=1000), headers=auth)
        assert long.status_code == 429 and not up.seen
        assert c.post("/v1/chat/completions", json=ask(), headers=auth).status_code == 200
        over = c.post("/v1/chat/completions", json=ask(), headers=auth)
        assert over.status_code == 429 and "budget" in over.json()["error"]["message"]
    with client(cfg, Upstream()) as c:                # spend survives a restart (telemetry)
        assert c.post("/v1/chat/completions", json=ask(), headers=auth).status_code == 429
        status = c.get("/v1/budget", headers=auth).json()
        cost = (12 * 2 + 3 * 8) / 1e6                 # the first request's usage, booked
        [daily] = status["budgets"]
        assert status["key"] == "alice" and daily["budget"] == "daily"
        assert daily["limit_usd"] == 0.0021 and daily["held_usd"] == 0.0
        assert daily["spent_usd"] == pytest.approx(cost)
        assert daily["remaining_usd"] == pytest.approx(0.0021 - cost)
        assert c.get("/v1/budget").status_code == 401
    with client(config(tmp_path), Upstream()) as c:   # auth off: no key, no budget
        assert c.get("/v1/budget").status_code == 404


def leave_once_sent(c: TestClient, up: Upstream, payload: bytes) -> list[dict[str, Any]]:
    """POST ``payload`` to /v1/chat/completions as a client that disconnects once a backend
    has the request; the ASGI messages the gateway sent back."""
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": payload, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        while not up.seen:                    # the backend has the request: now leave
            await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
             "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "headers": [(b"content-type", b"application/json"),
                                                     (b"content-length", b"%d" % len(payload))]}
    c.portal.call(c.app, scope, receive, send)
    return sent


@pytest.mark.parametrize("behaviour", ["hold", "sse-slow"])
def test_a_client_that_leaves_cancels_the_upstream_call(tmp_path: Path, behaviour: str) -> None:
    """The client disconnects while the edge is still working (before its answer, or before
    a stream's first chunk): the upstream call is cancelled, its response closed and the
    backend's slot free at once; the request is recorded with status 499."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'gone.db'}")
    up = Upstream(edge=[behaviour, "ok"])
    payload = json.dumps(ask("edge", stream=behaviour == "sse-slow")).encode()
    with client(config(tmp_path), up, store) as c:
        sent = leave_once_sent(c, up, payload)
        assert up.cancelled == ["edge"]
        assert all(reply.released for reply in up.replies)
        assert c.get("/health").json()["backends"]["edge"]["in_flight"] == 0
        assert scrape(c.get("/metrics").text)["vlroute_client_disconnects_total", ()] == 1
        assert c.post("/v1/chat/completions", json=ask("edge")).status_code == 200
    assert sent[0]["status"] == 499
    rows = store.rows()
    assert [r["status"] for r in rows] == [499, 200]
    # the edge had the request (its prompt is read): its row names it; the edge is free
    assert rows[0]["chosen"] == "edge" and rows[0]["cost_usd"] == 0.0


def test_a_stream_cleans_up_when_the_client_leaves_before_the_first_chunk() -> None:
    from starlette.requests import ClientDisconnect

    from vlroute.serve.pipeline import Stream

    finished: list[int] = []
    started: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        started.append(1)
        yield b"data: x\n\n"

    async def finish() -> None:
        finished.append(1)

    async def send(message: dict[str, Any]) -> None:
        raise OSError("client went away")

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(5)
        return {"type": "http.disconnect"}

    async def main() -> None:
        stream = Stream(body(), finish, media_type="text/event-stream")
        with pytest.raises((OSError, ClientDisconnect)):
            await stream({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)

    asyncio.run(main())
    assert finished == [1] and started == []       # cleaned up, though the body never ran
