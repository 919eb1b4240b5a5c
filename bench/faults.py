"""Fault injection against the gateway on loopback. Run by hand:

    python bench/faults.py [--seconds 6] [--out bench/results]

The dev backends run as processes (``vlroute.serve.dev_backends.spawn``); their faults change
at run time through their ``POST /admin/faults``.

1. Steady load of non-streamed requests (4 client threads) through the gateway to the two dev
   backends; the edge backend is killed half-way. Counts requests that did not get a 200
   (the target is none: the gateway falls back to the cloud backend).
2. Steady load again; the gateway is killed with SIGKILL half-way. Every request that got a 200
   must have its telemetry row (the row is committed before the answer leaves).
3. A corpus of bad requests: every one must get a 4xx with the OpenAI error envelope, none a 5xx.
4. A spend budget under concurrent load across two workers (``--workers 2``): 400 requests
   from 8 threads against a daily budget of 100.5 requests' cost. The target: exactly 100
   answered, the rest 429, and spend never over the budget.

Then one gateway serving a kNN bundle (hashing encoders, built here from the demo data), with
API keys (one with a daily budget, one without), an admin key and ``limits.header_timeout_s``
of 2 s, is attacked:

5. ``headers``: unicode and oversized header values (session ids, API keys, 20 KB to 1 MB
   values, 4,000 headers), unicode scenario and backend names; ``malformed_http``: requests
   the HTTP parser refuses (a NUL byte, a UTF-8 header name, obs-fold, ...).
6. ``refusals``: the backend the router prefers answers 401, 403, 404, 429, 500 in turn: the
   request falls back to the other (200), or, sent to that backend by name, gets a 502.
7. ``cut_streams``: a stream cut after 2 chunks (the client gets a 200 that stops short, the
   row a 502 with its partial cost), cut before its first chunk, a JSON body cut half-way,
   answers without usage (the estimate is booked).
8. ``slow_loris``: 50 connections dribble header lines and never finish: each must be closed
   within the header timeout; a normal client's latency is measured before and during.
9. ``streams``: 500 concurrent streams (the backends pause 50 ms between chunks); half the
   clients disconnect after the first chunk.
10. ``locked_db``: load from 6 threads (budgeted key: a hold each; a key without budget; new
    session ids: a pin each) while another connection holds ``BEGIN EXCLUSIVE`` on the
    telemetry file for 10 s. Every answered request must end up with its row (spooled, then
    replayed), or get a 503 naming ``database``; backend calls are counted against rows.
11. ``reload``: ``POST /admin/reload`` with missing keys and broken bundle folders: 401 / 400 /
    409, and the bundle that was serving keeps serving.
12. ``outage``: both backends answer 503: 502 while a candidate is tried, then 503 naming
    ``model`` once both breakers are open.

After every phase: ``in_flight`` of each backend back to 0 (``/health``), and the budgeted
key's spend in [0, limit] with no hold left (``/v1/budget``). Every reply to phases 3, 5-12
is checked: no 500, every error in the OpenAI envelope, a 502 only where every candidate
refused, a 503 only where none is available or the database is locked (named in
``param``). Writes ``faults.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import shutil
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _procs import (
    CLI,
    Tally,
    free_port,
    in_flight,
    raw_http,
    set_fault,
    slow_loris,
    start_gateway,
    stop,
    wait_for,
)

from vlroute.serve.dev_backends import spawn

ASK = {"model": "vlroute/mes=6,tau=0.6", "messages": [{"role": "user", "content": "2 + 2?"}]}


def run_threads(targets: list[Callable[[], None]]) -> None:
    """Run each of ``targets`` in a thread of its own until all return."""
    pool = [threading.Thread(target=t) for t in targets]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def load(url: str, seconds: float, threads: int = 4) -> list[tuple[int, str | None]]:
    """(status, request id) of every request sent during ``seconds`` (0: connection lost)."""
    out: list[tuple[int, str | None]] = []
    stop = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < stop:
                try:
                    r = client.post(url, json=ASK)
                    out.append((r.status_code, r.headers.get("x-vlroute-request-id")))
                except httpx.TransportError:
                    out.append((0, None))
    run_threads([worker] * threads)
    return out


KEY = "sk-vlroute-faults"
#: 40 characters: the gateway estimates 10 input tokens, what the dev backends report, so the
#: estimate reserved equals the cost booked ($1 per 1M input tokens: $0.00001)
BUDGET_ASK = {"model": "cloud", "messages": [{"role": "user", "content": "x" * 40}]}
PER_REQUEST_USD = 1e-5


def budget_run(url: str, requests: int = 400, threads: int = 8) -> list[int]:
    """Statuses of ``requests`` budgeted requests sent from ``threads`` threads."""
    out: list[int] = []
    todo = iter(range(requests))
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=30, headers={"authorization": f"Bearer {KEY}"}) as client:
            while True:
                with lock:
                    if next(todo, None) is None:
                        return
                out.append(client.post(url, json=BUDGET_ASK).status_code)
    run_threads([worker] * threads)
    return out


def bad_requests() -> list[tuple[str, bytes, dict[str, str]]]:
    """(case, body, headers); the gateway they go to has auth on and remote images enabled
    for an allow list of private hosts, so those are refused by the address checks."""
    image = "data:image/png;base64,"
    msg = [{"role": "user", "content": "hi"}]

    def chat(messages: Any = msg, model: Any = "vlroute/quality") -> bytes:
        return json.dumps({"model": model, "messages": messages}).encode()

    def remote(url: str) -> bytes:
        return chat([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}])

    cases = [
        ("malformed JSON", b"{nope"), ("array body", b"[]"), ("string body", b'"x"'),
        ("no messages", json.dumps({"model": "vlroute/quality"}).encode()),
        ("messages not a list", chat(3)), ("model not a string", chat(model=[1])),
        ("unknown scenario", chat(model="vlroute/turbo")),
        ("bad part", chat([{"role": "user", "content": [{"typ": "text"}]}])),
        ("broken base64", chat([{"role": "user", "content": [{"type": "image_url",
                                 "image_url": {"url": image + "!!!"}}]}])),
        ("not an image", chat([{"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": image + base64.b64encode(b"GIF89a-not-really").decode()}}]}])),
        ("loopback image URL", remote("http://127.0.0.1:22/x.png")),
        ("localhost image URL", remote("http://localhost/x.png")),
        ("link-local image URL (cloud metadata)",
         remote("http://169.254.169.254/latest/meta-data/")),
        ("private image URL", remote("http://10.0.0.1/x.png")),
        ("IPv6 loopback image URL", remote("http://[::1]/x.png")),
        ("image host off the allow list", remote("https://example.com/cat.png")),
        ("huge body", b'{"model": "vlroute/quality", "pad": "' + b"x" * 25_000_000 + b'"}'),
        ("role missing", chat([{"content": "x"}])),
        ("decompression bomb (20000 x 20000 PNG, 48 KB)", chat([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image + _bomb()}}]}])),
    ]
    keyed = {"authorization": f"Bearer {KEY}"}
    return [(name, body, keyed) for name, body in cases] + [
        ("missing key", chat(), {}),
        ("wrong key", chat(), {"authorization": "Bearer sk-wrong"}),
        ("session id of 10,000 characters", chat(), {**keyed, "x-vlroute-session": "s" * 10_000})]


def _bomb() -> str:
    """A real 400-megapixel PNG (one bit per pixel, all zeros) in a small file, base64."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# -- the hostile phases: one gateway with a bundle, keys, an admin key ----------------------

FREE = "sk-vlroute-free"
ADMIN = "sk-vlroute-admin"
HEADER_TIMEOUT_S = 2.0
MODELS = ("Qwen2-VL-7B-Instruct", "Qwen2-VL-72B-Instruct")
UNICODE_SCENARIO = "éco-日本"
LORIS = 50
STREAMS = 500
#: seconds another connection holds the telemetry file
LOCK_S = 10.0


@dataclass
class Hostile:
    """The gateway under attack: its URL and port, the dev backends' ports by name, its
    telemetry file, the bundle it serves and a scratch folder."""

    url: str
    port: int
    ports: dict[str, int]
    db: Path
    artifact: Path
    tmp: Path

    @property
    def chat_url(self) -> str:
        return f"{self.url}/v1/chat/completions"


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def one_shot(headers: dict[str, str]) -> httpx.Client:
    """A client that opens a connection per request: after a reply that closes its
    connection (a 500 does), the next request must not find it in the pool."""
    return httpx.Client(timeout=60, headers=headers,
                        limits=httpx.Limits(max_keepalive_connections=0))


def ask(model: str = "vlroute/quality", stream: bool = False, usage: bool = False
        ) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "stream": stream,
                            "messages": [{"role": "user", "content": "x" * 40}]}
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body


def build_bundle(tmp: Path, log: Any) -> Path:
    """A kNN bundle over the two Qwen2-VL models on hashing features (a few seconds)."""
    data = Path(__file__).resolve().parents[1] / "src/vlroute/demo_data/dynamath_mini"
    for args in (["bench", "build", str(data), "--out", str(tmp / "bench")],
                 ["features", str(tmp / "bench"), "--text", "hashing-text", "--image",
                  "hashing-image"],
                 ["train", "knn", str(tmp / "bench"), "--features", "hashing-text,hashing-image",
                  "--models", ",".join(MODELS), "--out", str(tmp / "bundle")]):
        subprocess.run([*CLI, *args], check=True, stdout=log, stderr=log)
    return tmp / "bundle"


def hostile_config(tmp: Path, edge: int, cloud: int, artifact: Path) -> Path:
    sha = {k: hashlib.sha256(k.encode()).hexdigest() for k in (KEY, FREE, ADMIN)}
    path = tmp / "hostile.yaml"
    path.write_text(f"""
backends:
  - {{name: edge, base_url: "http://127.0.0.1:{edge}/v1", model: small, tier: edge,
     router_model: {MODELS[0]}, prior_quality: 0.7, price_in_per_1m: 0.1,
     price_out_per_1m: 0.4, timeout_s: 5, max_concurrency: 300}}
  - {{name: cloud, base_url: "http://127.0.0.1:{cloud}/v1", model: big,
     router_model: {MODELS[1]}, prior_quality: 0.9, price_in_per_1m: 1.0,
     price_out_per_1m: 4.0, timeout_s: 5, max_concurrency: 300}}
router: {{artifact: "{artifact}", text_encoder: hashing-text, image_encoder: hashing-image}}
scenarios: {{"{UNICODE_SCENARIO}": "cost_weight=0.5"}}
auth_keys:
  - {{id: faults, sha256: "{sha[KEY]}", budget_usd_day: 10.0}}
  - {{id: free, sha256: "{sha[FREE]}"}}
admin_keys: [{{id: ops, sha256: "{sha[ADMIN]}"}}]
limits: {{header_timeout_s: {HEADER_TIMEOUT_S}}}
telemetry: {{url: "sqlite:///{tmp / 'hostile.db'}"}}
""", encoding="utf-8")
    return path


def budget_check(h: Hostile, settle_s: float = 5.0) -> dict[str, Any]:
    """The budgeted key's daily budget once no hold is left (or ``settle_s`` passed): ok
    when spent is in [0, limit] and nothing is held."""
    deadline = time.monotonic() + settle_s
    while True:
        budget = httpx.get(f"{h.url}/v1/budget", headers=auth(KEY), timeout=30).json()[
            "budgets"][0]
        if budget["held_usd"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return {"spent_usd": budget["spent_usd"], "held_usd": budget["held_usd"],
            "limit_usd": budget["limit_usd"],
            "ok": 0 <= budget["spent_usd"] <= budget["limit_usd"] and budget["held_usd"] == 0}


def rows(h: Hostile, since: float = 0.0) -> dict[str, dict[str, Any]]:
    """Telemetry rows since ``since``: id -> {chosen, status, cost_usd, tokens_out}."""
    with sqlite3.connect(h.db, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        return {r["id"]: dict(r) for r in conn.execute(
            "SELECT id, chosen, status, cost_usd, tokens_out FROM requests WHERE ts >= ?",
            (since,))}


def header_phase(h: Hostile, tally: Tally) -> dict[str, Any]:
    keyed = [(b"authorization", f"Bearer {KEY}".encode())]
    session = b"x-vlroute-session"
    body = json.dumps(ask()).encode()
    cases: list[tuple[str, list[tuple[bytes, bytes]], bytes, set[int]]] = [
        ("session id in UTF-8 (Cyrillic, emoji)", [*keyed, (session, "сессия-😀".encode())],
         body, {200}),
        ("session id of bytes that are not UTF-8", [*keyed, (session, b"\xff\xfe\xfd")], body,
         {200, 400}),
        ("session id of 300 characters", [*keyed, (session, b"s" * 300)], body, {400}),
        ("empty session id", [*keyed, (session, b"")], body, {400}),
        ("API key in UTF-8", [(b"authorization", "Bearer ключ".encode())], body, {401}),
        ("API key of bytes that are not UTF-8", [(b"authorization", b"Bearer \xff\xfe")], body,
         {401}),
        ("API key of 15,000 characters", [(b"authorization", b"Bearer " + b"k" * 15_000)],
         body, {401, 431}),
        ("header value of 20 KB", [*keyed, (b"x-pad", b"p" * 20_000)], body, {431}),
        ("header value of 1 MB in UTF-8", [*keyed, (b"x-pad", "é".encode() * 500_000)], body,
         {431}),
        ("4,000 small headers", [*keyed, *((b"x-h%d" % i, b"v") for i in range(4000))], body,
         {431}),
        ("scenario spelled in Cyrillic", keyed, json.dumps(ask("vlroute/качество")).encode(),
         {400}),
        (f"configured scenario named {UNICODE_SCENARIO}", keyed,
         json.dumps(ask(f"vlroute/{UNICODE_SCENARIO}")).encode(), {200}),
        ("inline scenario named €ü, streamed", keyed,
         json.dumps(ask("vlroute/tau=0.5,by=usd,name=€ü", stream=True)).encode(), {200}),
        ("backend name with a right-to-left override", keyed,
         json.dumps(ask("edge\u202e")).encode(), {400}),
        ("scenario of 600 characters", keyed, json.dumps(ask("vlroute/" + "x" * 600)).encode(),
         {400}),
        ("body in UTF-16", keyed, json.dumps(ask()).encode("utf-16"), {400}),
    ]
    echoed = []
    with one_shot({}) as client:
        for case, headers, content, allowed in cases:
            r = client.post(h.chat_url, content=content,
                            headers=[(b"content-type", b"application/json"), *headers])
            tally.add(case, r.status_code, r.content, allowed)
            if r.status_code == 200:
                echoed.append(r.headers.get("x-vlroute-scenario", ""))
    return {"scenario_headers_echoed": echoed,
            "echoed_ascii": all(e.isascii() and e.isprintable() for e in echoed)}


def malformed_phase(h: Hostile, tally: Tally) -> dict[str, Any]:
    body = json.dumps(ask()).encode()

    def request(extra: bytes) -> bytes:
        return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nAuthorization: Bearer " + KEY.encode() +
                b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body)

    for case, data in [("NUL byte in a header value", request(b"X-Bad: a\x00b\r\n")),
                       ("header name in UTF-8", request("X-Ünï: 1\r\n".encode())),
                       ("header line without a colon", request(b"Nocolon\r\n")),
                       ("folded header line (obs-fold)", request(b"X-Fold: a\r\n b\r\n")),
                       ("request line HTTP/9.9", b"GET /health HTTP/9.9\r\n\r\n")]:
        status, content = raw_http(h.port, data)
        tally.add(case, status, content, {400})
    return {}


def route_first(h: Hostile) -> str:
    """The backend ``vlroute/quality`` tries first for :func:`ask`'s prompt."""
    r = httpx.post(f"{h.url}/v1/route", json=ask(), headers=auth(KEY), timeout=30)
    return str(r.json()["model"])


def refusal_phase(h: Hostile, tally: Tally) -> dict[str, Any]:
    first = route_first(h)
    other = next(n for n in h.ports if n != first)
    fell_back = 0
    with one_shot(auth(KEY)) as client:
        def send(case: str, body: dict[str, Any], allowed: set[int]) -> httpx.Response:
            r = client.post(h.chat_url, json=body)
            tally.add(case, r.status_code, r.content, allowed)
            return r

        for status in (401, 403, 404, 429, 500):
            # two failures, a success (the breaker closes), one more: the breaker stays shut
            set_fault(h.ports[first], {"status": status})
            for body in (ask(), ask(stream=True)):
                r = send(f"{first} answers {status}, routed", body, {200})
                fell_back += r.headers.get("x-vlroute-model") == other
            set_fault(h.ports[first])
            send(f"{first} healthy again, by name", ask(first), {200})
            set_fault(h.ports[first], {"status": status})
            send(f"{first} answers {status}, by name", ask(first), {502})
            set_fault(h.ports[first])
            send(f"{first} healthy again, by name", ask(first), {200})
    return {"refusing_backend": first, "fell_back_to_other": fell_back}


def cut_phase(h: Hostile, tally: Tally) -> dict[str, Any]:
    edge = h.ports["edge"]
    cut, partial, estimated = [], 0, []
    with one_shot(auth(KEY)) as client:
        set_fault(edge, {"mode": "cut_stream", "after_chunks": 2})
        for _ in range(4):
            with client.stream("POST", h.chat_url, json=ask("edge", stream=True, usage=True)
                               ) as r:
                content = r.read()
            tally.add("stream cut after 2 chunks", r.status_code, content, {200})
            partial += r.status_code == 200 and b"[DONE]" not in content
            cut.append(r.headers.get("x-vlroute-request-id"))
        for case, fault, body in [
                ("stream cut before its first chunk", {"mode": "cut_stream", "after_chunks": 0},
                 ask("edge", stream=True)),
                ("JSON body cut half-way", {"mode": "cut_stream"}, ask("edge"))]:
            set_fault(edge, fault)
            r = client.post(h.chat_url, json=body)
            tally.add(case, r.status_code, r.content, {502})
        set_fault(edge, {"mode": "no_usage"})
        for body in (ask("edge"), ask("edge", stream=True, usage=True)):
            r = client.post(h.chat_url, json=body)
            tally.add("answer without usage", r.status_code, r.content, {200})
            estimated.append(r.headers.get("x-vlroute-request-id"))
        set_fault(edge)
    stored = rows(h)
    cut_rows = [stored.get(rid, {}) for rid in cut]
    estimate_rows = [stored.get(rid, {}) for rid in estimated]
    return {"cut_streams_seen": partial,
            "cut_rows_502_with_cost": sum(1 for r in cut_rows if r.get("status") == 502
                                          and (r.get("cost_usd") or 0) > 0),
            "no_usage_rows_with_estimate": sum(1 for r in estimate_rows if r.get("cost_usd")
                                               and r.get("tokens_out") is None)}


def normal_client(h: Hostile, seconds: float) -> tuple[list[float], int]:
    """Latencies (ms) of sequential normal requests for ``seconds``, and the failures."""
    latencies, failed = [], 0
    stop_at = time.monotonic() + seconds
    with httpx.Client(timeout=30, headers=auth(FREE)) as client:
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            try:
                ok = client.post(h.chat_url, json=ask()).status_code == 200
            except httpx.TransportError:
                ok = False
            latencies.append((time.perf_counter() - start) * 1e3)
            failed += not ok
    return latencies, failed


def loris_phase(h: Hostile, tally: Tally) -> dict[str, Any]:
    before, _ = normal_client(h, 3.0)
    during: list[tuple[list[float], int]] = []
    thread = threading.Thread(target=lambda: during.append(normal_client(h, 3.0)))
    thread.start()

    async def attack() -> list[float | None]:
        return await asyncio.gather(*(slow_loris(h.port, HEADER_TIMEOUT_S * 5)
                                      for _ in range(LORIS)))
    closed = asyncio.run(attack())
    thread.join()
    times = [t for t in closed if t is not None]
    latencies, failed = during[0]
    return {"connections": LORIS, "closed": len(times), "header_timeout_s": HEADER_TIMEOUT_S,
            "closed_after_s_max": round(max(times, default=float("nan")), 3),
            "closed_after_s_min": round(min(times, default=float("nan")), 3),
            "normal_requests_before": len(before), "normal_requests_during": len(latencies),
            "normal_failed_during": failed,
            "normal_p50_ms_before": round(statistics.median(before), 2),
            "normal_p50_ms_during": round(statistics.median(latencies), 2),
            "normal_max_ms_during": round(max(latencies), 2)}


def streams_phase(h: Hostile, tally: Tally) -> dict[str, Any]:
    for port in h.ports.values():
        set_fault(port, {"mode": "slow", "delay_s": 0, "chunk_delay_s": 0.05})

    async def one(client: httpx.AsyncClient, leave: bool) -> tuple[int, bytes, str]:
        async with client.stream("POST", h.chat_url, json=ask("vlroute/auto", stream=True)
                                 ) as r:
            if r.status_code != 200:
                return r.status_code, await r.aread(), "error"
            if leave:                       # the first chunk, then the client is gone
                async for _ in r.aiter_raw():
                    break
                return 200, b"", "left mid-stream"
            body = await r.aread()
            return 200, b"", "complete" if body.endswith(b"data: [DONE]\n\n") else "cut"

    async def run() -> list[Any]:
        limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits, headers=auth(KEY)) as client:
            return await asyncio.gather(*(one(client, n % 2 == 1) for n in range(STREAMS)),
                                        return_exceptions=True)
    start = time.perf_counter()
    outcomes = asyncio.run(run())
    seconds = time.perf_counter() - start
    kinds: Counter[str] = Counter()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            kinds[f"client error {type(outcome).__name__}"] += 1
            tally.add(f"concurrent stream: {outcome!r}", 0, b"", {200})
            continue
        status, content, kind = outcome
        tally.add(f"concurrent stream ({kind})", status, content, {200})
        kinds[kind] += 1
    for port in h.ports.values():
        set_fault(port)
    return {"streams": STREAMS, "outcomes": dict(kinds), "seconds": round(seconds, 2)}


def locked_phase(h: Hostile, tally: Tally) -> dict[str, Any]:
    for port in h.ports.values():
        set_fault(port)                                  # restarts their request counts
    since = time.time()                # rows from here on (the gateway's clock: ours)
    out: list[tuple[str, int, str | None]] = []
    spooled: list[bytes] = []
    stop_at = time.monotonic() + LOCK_S + 5

    def worker(kind: str) -> None:
        with httpx.Client(timeout=60, headers=auth(KEY if kind == "budget hold" else FREE)
                          ) as client:
            while time.monotonic() < stop_at:
                pin = {"x-vlroute-session": uuid.uuid4().hex} if kind == "session pin" else {}
                try:
                    r = client.post(h.chat_url, json=ask(), headers=pin)
                except httpx.TransportError as exc:
                    tally.add(f"locked database, {kind}: {exc!r}", 0, b"", {200, 503})
                    out.append((kind, 0, None))
                    continue
                error = tally.add(f"locked database, {kind}", r.status_code, r.content,
                                  {200, 503})
                out.append((kind, r.status_code, r.headers.get("x-vlroute-request-id")
                            if error is None else error.get("param")))

    def lock() -> None:
        time.sleep(2)
        conn = sqlite3.connect(h.db, timeout=30, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(LOCK_S)
        spooled.extend(line for path in h.db.parent.glob(f"{h.db.name}.spool.*.jsonl")
                       for line in path.read_bytes().splitlines())
        conn.execute("ROLLBACK")
        conn.close()

    run_threads([lock, *(lambda k=k: worker(k) for k in
                            ("budget hold", "no hold", "session pin") * 2)])
    for _ in range(3):                  # the next writes replay the spool first
        r = httpx.post(h.chat_url, json=ask(), headers=auth(FREE), timeout=30)
        out.append(("after the lock", r.status_code, r.headers.get("x-vlroute-request-id")))
    time.sleep(0.5)
    stored = rows(h, since)
    answered = [rid for _, status, rid in out if status == 200]
    calls = sum(set_fault(port) for port in h.ports.values())
    by_kind: dict[str, Counter[int]] = {}
    for kind, status, _ in out:
        by_kind.setdefault(kind, Counter())[status] += 1
    return {"sent": len(out), "answered": len(answered),
            "answered_without_row": sum(rid not in stored for rid in answered),
            "lock_s": LOCK_S, "rows_spooled_while_locked": len(spooled),
            "refused_503_database": sum(1 for _, s, p in out if s == 503 and p == "database"),
            "statuses_by_kind": {k: dict(v) for k, v in by_kind.items()},
            "backend_calls": calls,
            "backend_answers_without_row": calls - sum(1 for r in stored.values() if r["chosen"]),
            "spool_files_left": len(list(h.db.parent.glob(f"{h.db.name}.spool.*.jsonl")))}


def broken_bundles(h: Hostile) -> list[tuple[str, str]]:
    """(case, folder) of bundles the gateway must refuse."""
    good, root = h.artifact, h.tmp / "broken"
    doc = json.loads((good / "router.json").read_text())

    def folder(name: str, router_json: bytes | None = None, arrays: bytes | None = None,
               keep_arrays: bool = True) -> str:
        path = root / name
        path.mkdir(parents=True)
        if router_json is not None:
            (path / "router.json").write_bytes(router_json)
        if arrays is not None:
            (path / "arrays.npz").write_bytes(arrays)
        elif keep_arrays and router_json is not None:
            shutil.copy(good / "arrays.npz", path / "arrays.npz")
        return str(path)

    npz = (good / "arrays.npz").read_bytes()
    shapes = root / "shapes.npz"
    root.mkdir(parents=True, exist_ok=True)
    np.savez(shapes, X=np.zeros((3, 5)), y=np.zeros(3))
    raw = json.dumps(doc).encode()
    return [
        ("missing folder", str(root / "nowhere")),
        ("empty folder", folder("empty")),
        ("a file, not a folder", str(good / "router.json")),
        ("path with a NUL byte", str(root) + "/x\x00y"),
        ("router.json not JSON", folder("garbage", b"{not json")),
        ("router.json not UTF-8", folder("binary", b"\xff\xfe\x00\x01")),
        ("router.json a list", folder("list", b"[1, 2]")),
        ("a baseline router (oracle)", folder("oracle", json.dumps(
            {"format": "vlroute-router/1", "router": "oracle"}).encode())),
        ("trained on other encoders", folder("encoders", raw.replace(
            b'"hashing-text-64"', b'"hashing-text-128"'))),
        ("candidates no backend serves", folder("candidates", raw.replace(
            MODELS[0].encode(), b"Qwen2-VL-2B-Instruct").replace(
            MODELS[1].encode(), b"Qwen2-VL-2B-Instruct"))),
        ("arrays.npz missing", folder("no-arrays", raw, keep_arrays=False)),
        ("arrays.npz truncated", folder("truncated", raw, npz[:len(npz) // 2])),
        ("arrays.npz of other shapes", folder("shapes", raw, shapes.read_bytes())),
    ]


def reload_phase(h: Hostile, tally: Tally) -> dict[str, Any]:
    admin = {**auth(ADMIN), "content-type": "application/json"}
    good = json.dumps({"artifact": str(h.artifact)}).encode()
    cases: list[tuple[str, bytes, dict[str, str], set[int]]] = [
        ("reload without a key", good, {"content-type": "application/json"}, {401}),
        ("reload with a wrong key", good, {**admin, **auth("sk-wrong")}, {401}),
        ("reload with an API key", good, {**admin, **auth(KEY)}, {401}),
        ("reload, artifact not a string", b'{"artifact": 5}', admin, {400}),
        ("reload, body not JSON", b"{artifact", admin, {400}),
        *((f"reload a broken bundle: {case}", json.dumps({"artifact": path}).encode(), admin,
           {400} if "\x00" in path else {409}) for case, path in broken_bundles(h))]
    with one_shot({}) as client:
        serving = client.get(f"{h.url}/health").json()["routing"]
        swapped, unanswered = [], 0
        for case, content, headers, allowed in cases:
            r = client.post(f"{h.url}/admin/reload", content=content, headers=headers)
            tally.add(case, r.status_code, r.content, allowed)
            if client.get(f"{h.url}/health").json()["routing"] != serving:
                swapped.append(case.removeprefix("reload a broken bundle: "))
                client.post(f"{h.url}/admin/reload", content=good, headers=admin)
            chat = client.post(h.chat_url, json=ask("vlroute/auto"), headers=auth(KEY))
            unanswered += chat.status_code != 200
        r = client.post(f"{h.url}/admin/reload", content=good, headers=admin)
        tally.add("reload the good bundle again", r.status_code, r.content, {200})
    return {"bundle_swapped_by": swapped, "chat_failed_after_reload": unanswered}


def outage_phase(h: Hostile, tally: Tally) -> dict[str, Any]:
    for port in h.ports.values():
        set_fault(port, {"status": 503})
    with one_shot(auth(KEY)) as client:
        for model in ["vlroute/quality"] * 6 + ["edge", "vlroute/auto"]:
            r = client.post(h.chat_url, json=ask(model))
            tally.add(f"both backends answer 503 ({model})", r.status_code, r.content,
                      {502, 503})
    for port in h.ports.values():
        set_fault(port)
    return {}


PHASES: list[tuple[str, Callable[[Hostile, Tally], dict[str, Any]]]] = [
    ("headers", header_phase), ("malformed_http", malformed_phase),
    ("refusals", refusal_phase), ("cut_streams", cut_phase), ("slow_loris", loris_phase),
    ("streams", streams_phase), ("locked_db", locked_phase), ("reload", reload_phase),
    ("outage", outage_phase)]


def hostile(tmp: Path, edge: int, cloud: int, log: Any) -> dict[str, Any]:
    """Phases 5-12 against one gateway; each phase's checks."""
    artifact = build_bundle(tmp, log)
    port = free_port()
    h = Hostile(f"http://127.0.0.1:{port}", port, {"edge": edge, "cloud": cloud},
                tmp / "hostile.db", artifact, tmp)
    gateway = start_gateway(hostile_config(tmp, edge, cloud, artifact), port, log)
    out: dict[str, Any] = {}
    try:
        for name, phase in PHASES:
            tally = Tally()
            details = phase(h, tally)
            busy = in_flight(h.url)
            out[name] = {**tally.summary(), **details, "in_flight_after": busy,
                         "leaked_slots": sum(busy.values()), "budget": budget_check(h)}
    finally:
        stop(gateway)
    with sqlite3.connect(h.db) as conn:
        out["negative_cost_rows"] = conn.execute(
            "SELECT COUNT(*) FROM requests WHERE cost_usd < 0").fetchone()[0]
    return out
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vlroute-faults-"))
    edge, cloud, port = free_port(), free_port(), free_port()
    db = tmp / "telemetry.db"
    config = tmp / "gateway.yaml"
    config.write_text(f"""
backends:
  - {{name: edge, base_url: "http://127.0.0.1:{edge}/v1", model: small, tier: edge,
     prior_quality: 0.7, timeout_s: 5}}
  - {{name: cloud, base_url: "http://127.0.0.1:{cloud}/v1", model: big, prior_quality: 0.9,
     price_in_per_1m: 1.0, timeout_s: 5}}
telemetry: {{url: "sqlite:///{db}"}}
""")
    log = (tmp / "log.txt").open("wb")
    edge_p, cloud_p = spawn("edge", edge, log=log), spawn("cloud", cloud, log=log)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    results: dict[str, Any] = {}
    try:
        wait_for(f"http://127.0.0.1:{edge}/v1/models")
        wait_for(f"http://127.0.0.1:{cloud}/v1/models")
        gateway = start_gateway(config, port, log)
        killer = threading.Timer(args.seconds / 2, edge_p.kill)
        killer.start()
        got = load(url, args.seconds)
        results["kill_edge"] = {"requests": len(got),
                                "lost": sum(1 for s, _ in got if s != 200),
                                "leaked_slots": sum(in_flight(f"http://127.0.0.1:{port}")
                                                    .values())}
        killer = threading.Timer(args.seconds / 2, lambda: gateway.send_signal(signal.SIGKILL))
        killer.start()
        got = load(url, args.seconds)
        gateway.wait()
        answered = {rid for s, rid in got if s == 200 and rid}
        with sqlite3.connect(db) as conn:
            stored = {r[0] for r in conn.execute("SELECT id FROM requests")}
        results["kill_gateway"] = {"answered": len(answered),
                                   "answered_without_row": len(answered - stored)}
        edge_p.wait()
        edge_p = spawn("edge", edge, log=log)
        wait_for(f"http://127.0.0.1:{edge}/v1/models")
        strict = tmp / "strict.yaml"
        strict.write_text(config.read_text() + f"""
auth_keys: [{{id: faults, sha256: "{hashlib.sha256(KEY.encode()).hexdigest()}"}}]
remote_images: {{enabled: true, allow_hosts: ["127.0.0.1", "localhost", "169.254.169.254",
                 "10.0.0.1", "::1"]}}
""")
        gateway = start_gateway(strict, port, log)
        bad, tally = [], Tally()
        for name, payload, headers in bad_requests():
            r = httpx.post(url, content=payload, timeout=30,
                           headers={"content-type": "application/json", **headers})
            error = tally.add(name, r.status_code, r.content, range(400, 500))
            bad.append({"case": name, "status": r.status_code, "envelope": error is not None})
        results["bad_requests"] = {"cases": bad, "non_4xx": sum(
            1 for b in bad if not 400 <= b["status"] < 500 or not b["envelope"]),
            **tally.summary(), "leaked_slots": sum(in_flight(f"http://127.0.0.1:{port}")
                                                   .values())}
        stop(gateway)
        budget = 100.5 * PER_REQUEST_USD
        budgeted = tmp / "budgeted.yaml"
        budgeted.write_text(config.read_text().replace(str(db), str(tmp / "budget.db")) + f"""
auth_keys: [{{id: faults, sha256: "{hashlib.sha256(KEY.encode()).hexdigest()}",
              budget_usd_day: {budget}}}]
""")
        gateway = start_gateway(budgeted, port, log, "--workers", "2")
        statuses = budget_run(url)
        stop(gateway)
        with sqlite3.connect(tmp / "budget.db") as conn:
            spent = conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM requests").fetchone()[0]
        results["budget"] = {"requests": len(statuses), "budget_usd": budget,
                             "answered": statuses.count(200), "refused_429": statuses.count(429),
                             "other": len(statuses) - statuses.count(200) - statuses.count(429),
                             "spent_usd": spent, "overshoot_usd": max(0.0, spent - budget)}
        results["hostile"] = hostile(tmp, edge, cloud, log)
    finally:
        for p in (edge_p, cloud_p):
            p.kill()
        log.close()
    results["totals"] = totals(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.json").write_text(json.dumps(results, indent=1, ensure_ascii=False)
                                          + "\n")
    table(results)


def totals(results: dict[str, Any]) -> dict[str, Any]:
    """The checks over every bad or hostile request (phases 3, 5-12)."""
    phases = [results["bad_requests"], *(v for k, v in results["hostile"].items()
                                         if isinstance(v, dict))]
    loaded = [results["hostile"][name] for name in ("streams", "locked_db")]
    return {"requests": sum(p["requests"] for p in phases),
            "crafted_requests": sum(p["requests"] for p in phases if p not in loaded),
            "requests_under_load": sum(p["requests"] for p in loaded),
            "slow_loris_connections": results["hostile"]["slow_loris"]["connections"],
            **{check: sum(len(p[check]) for p in phases)
               for check in ("http_500", "no_envelope", "bad_502", "bad_503", "unexpected")},
            "leaked_slots": sum(p["leaked_slots"] for p in phases) +
            results["kill_edge"]["leaked_slots"],
            "budget_ok": all(p["budget"]["ok"] for p in phases if "budget" in p)
            and results["budget"]["overshoot_usd"] == 0
            and results["hostile"]["negative_cost_rows"] == 0}


def checks(p: dict[str, Any]) -> str:
    """A phase's statuses and what failed its checks."""
    statuses = ", ".join(f"{n}x{s}" for s, n in p["statuses"].items())
    failed = [f"{len(p[c])} {label}" for c, label in (
        ("http_500", "HTTP 500"), ("no_envelope", "without the envelope"),
        ("bad_502", "unwarranted 502s"), ("bad_503", "unwarranted or unnamed 503s"),
        ("unexpected", "other than expected")) if p[c]]
    if p["leaked_slots"]:
        failed.append(f"{p['leaked_slots']} slots leaked")
    if not p["budget"]["ok"]:
        failed.append(f"budget off: {p['budget']}")
    return f"{p['requests']} requests: {statuses}; " + ("; ".join(failed) or "all checks pass")


def table(results: dict[str, Any]) -> None:
    k, g, b = results["kill_edge"], results["kill_gateway"], results["bad_requests"]
    h = results["hostile"]
    print("| fault | result | target |\n|---|---|---|")
    print(f"| edge backend killed under load | {k['lost']} of {k['requests']} requests lost, "
          f"{k['leaked_slots']} slots leaked | 0 |")
    print(f"| gateway SIGKILLed under load | {g['answered_without_row']} of {g['answered']} "
          "answered requests without a telemetry row | 0 |")
    print(f"| {len(b['cases'])} bad requests | {b['non_4xx']} without a 4xx + error envelope "
          "| 0 |")
    u = results["budget"]
    print(f"| daily budget of 100.5 requests, {u['requests']} requests over 2 workers | "
          f"{u['answered']} answered, {u['refused_429']} refused (429), {u['other']} other; "
          f"spent ${u['spent_usd']:.6f} of ${u['budget_usd']:.6f} | 100 answered, none over |")
    rows = {"headers": ("unicode and oversized header values", "4xx / 200 as each case "
                        "expects"),
            "malformed_http": ("requests the HTTP parser refuses", "400 in the envelope"),
            "refusals": ("backend answers 401 / 403 / 404 / 429 / 500", "fallback 200; by "
                         "name 502"),
            "cut_streams": ("stream cut mid-way, before its first chunk; JSON cut; no usage",
                            "200 cut short (row 502) / 502 / 200"),
            "reload": ("POST /admin/reload: no key, broken bundles", "401 / 400 / 409, old "
                       "bundle serves"),
            "outage": ("both backends answer 503", "502, then 503 naming model")}
    for name, (title, target) in rows.items():
        print(f"| {title} | {checks(h[name])} | {target} |")
    c, r = h["cut_streams"], h["reload"]
    print(f"| ... cut streams | {c['cut_streams_seen']} cut answers seen, "
          f"{c['cut_rows_502_with_cost']} rows 502 with their partial cost; "
          f"{c['no_usage_rows_with_estimate']} of 2 answers without usage booked at the "
          "estimate | 4, 4, 2 |")
    print(f"| ... broken bundles | bundle replaced by {len(r['bundle_swapped_by'])} "
          f"({', '.join(r['bundle_swapped_by']) or 'none'}); chat failed after "
          f"{r['chat_failed_after_reload']} reloads | none, 0 |")
    s = h["slow_loris"]
    print(f"| {s['connections']} slow-loris connections | {s['closed']} closed, after "
          f"{s['closed_after_s_min']}-{s['closed_after_s_max']} s (header timeout "
          f"{s['header_timeout_s']} s); a normal client: p50 {s['normal_p50_ms_before']} ms "
          f"before, {s['normal_p50_ms_during']} ms during (max {s['normal_max_ms_during']}), "
          f"{s['normal_failed_during']} of {s['normal_requests_during']} failed | all closed "
          "within the timeout, normal client unaffected |")
    t = h["streams"]
    print(f"| {t['streams']} concurrent streams, half the clients leave mid-stream | "
          f"{checks(t)}; {t['outcomes']} in {t['seconds']} s | no error, no slot leaked |")
    d = h["locked_db"]
    print(f"| telemetry file locked (BEGIN EXCLUSIVE, {d['lock_s']} s) under load | "
          f"{checks(d)}; {d['rows_spooled_while_locked']} rows spooled; "
          f"{d['answered_without_row']} of {d['answered']} answered without a row, "
          f"{d['refused_503_database']} 503 naming database, "
          f"{d['backend_answers_without_row']} of {d['backend_calls']} backend answers "
          f"without a row; {d['statuses_by_kind']} | 0 without a row |")
    o = results["totals"]
    print(f"| all {o['requests']} bad or hostile requests ({o['crafted_requests']} crafted, "
          f"{o['requests_under_load']} under load; + {o['slow_loris_connections']} "
          f"slow-loris connections) | {o['http_500']} HTTP 500, {o['no_envelope']} errors "
          f"without the envelope, {o['bad_502']} unwarranted 502s, {o['bad_503']} unwarranted or "
          f"unnamed 503s, {o['leaked_slots']} slots leaked, budget "
          f"{'within [0, limit]' if o['budget_ok'] else 'OFF'} | 0, 0, 0, 0, 0, within |")


if __name__ == "__main__":
    main()
