"""Fault injection against the gateway on loopback. Run by hand:

    python bench/faults.py [--seconds 6] [--out bench/results]

1. Steady load of non-streamed requests (4 client threads) through the gateway to the two dev
   backends; the edge backend is killed half-way. Counts requests that did not get a 200
   (the target is none: the gateway falls back to the cloud backend).
2. Steady load again; the gateway is killed with SIGKILL half-way. Every request that got a 200
   must have its telemetry row (the row is committed before the answer leaves).
3. A corpus of bad requests: every one must get a 4xx with the OpenAI error envelope, none a 5xx.
4. A spend budget under concurrent load across two workers (``--workers 2``): 400 requests
   from 8 threads against a daily budget of 100.5 requests' cost. The target: exactly 100
   answered, the rest 429, and spend never over the budget.
Writes ``faults.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _procs import CLI, free_port, wait_for

ASK = {"model": "vlroute/mes=6,tau=0.6", "messages": [{"role": "user", "content": "2 + 2?"}]}


def run_threads(worker: Any, threads: int) -> None:
    """Run ``worker`` in ``threads`` threads until all return."""
    pool = [threading.Thread(target=worker) for _ in range(threads)]
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
    run_threads(worker, threads)
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
    run_threads(worker, threads)
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
    edge_p = subprocess.Popen([*CLI, "dev-backends", "--ports", f"{edge},{free_port()}"],
                              stdout=log, stderr=log)
    cloud_p = subprocess.Popen([*CLI, "dev-backends", "--ports", f"{free_port()},{cloud}"],
                               stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    results: dict[str, Any] = {}
    try:
        wait_for(f"http://127.0.0.1:{edge}/v1/models")
        wait_for(f"http://127.0.0.1:{cloud}/v1/models")
        gateway = subprocess.Popen([*CLI, "serve", "--config", str(config), "--port",
                                    str(port)], stdout=log, stderr=log)
        wait_for(f"http://127.0.0.1:{port}/health")
        killer = threading.Timer(args.seconds / 2, edge_p.kill)
        killer.start()
        got = load(url, args.seconds)
        results["kill_edge"] = {"requests": len(got),
                                "lost": sum(1 for s, _ in got if s != 200)}
        killer = threading.Timer(args.seconds / 2, lambda: gateway.send_signal(signal.SIGKILL))
        killer.start()
        got = load(url, args.seconds)
        gateway.wait()
        answered = {rid for s, rid in got if s == 200 and rid}
        with sqlite3.connect(db) as conn:
            stored = {r[0] for r in conn.execute("SELECT id FROM requests")}
        results["kill_gateway"] = {"answered": len(answered),
                                   "answered_without_row": len(answered - stored)}
        strict = tmp / "strict.yaml"
        strict.write_text(config.read_text() + f"""
auth_keys: [{{id: faults, sha256: "{hashlib.sha256(KEY.encode()).hexdigest()}"}}]
remote_images: {{enabled: true, allow_hosts: ["127.0.0.1", "localhost", "169.254.169.254",
                 "10.0.0.1", "::1"]}}
""")
        gateway = subprocess.Popen([*CLI, "serve", "--config", str(strict), "--port",
                                    str(port)], stdout=log, stderr=log)
        wait_for(f"http://127.0.0.1:{port}/health")
        bad = []
        for name, payload, headers in bad_requests():
            r = httpx.post(url, content=payload, timeout=30,
                           headers={"content-type": "application/json", **headers})
            envelope = "error" in r.json() if r.headers.get("content-type", "").startswith(
                "application/json") else False
            bad.append({"case": name, "status": r.status_code, "envelope": envelope})
        results["bad_requests"] = {"cases": bad, "non_4xx": sum(
            1 for b in bad if not 400 <= b["status"] < 500 or not b["envelope"])}
        gateway.terminate()
        gateway.wait()
        budget = 100.5 * PER_REQUEST_USD
        budgeted = tmp / "budgeted.yaml"
        budgeted.write_text(config.read_text().replace(str(db), str(tmp / "budget.db")) + f"""
auth_keys: [{{id: faults, sha256: "{hashlib.sha256(KEY.encode()).hexdigest()}",
              budget_usd_day: {budget}}}]
""")
        gateway = subprocess.Popen([*CLI, "serve", "--config", str(budgeted), "--port",
                                    str(port), "--workers", "2"], stdout=log, stderr=log)
        wait_for(f"http://127.0.0.1:{port}/health")
        statuses = budget_run(url)
        gateway.terminate()
        gateway.wait()
        with sqlite3.connect(tmp / "budget.db") as conn:
            spent = conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM requests").fetchone()[0]
        results["budget"] = {"requests": len(statuses), "budget_usd": budget,
                             "answered": statuses.count(200), "refused_429": statuses.count(429),
                             "other": len(statuses) - statuses.count(200) - statuses.count(429),
                             "spent_usd": spent, "overshoot_usd": max(0.0, spent - budget)}
    finally:
        for p in (edge_p, cloud_p):
            p.kill()
        log.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.json").write_text(json.dumps(results, indent=1) + "\n")
    k, g, b = results["kill_edge"], results["kill_gateway"], results["bad_requests"]
    print("| fault | result | target |\n|---|---|---|")
    print(f"| edge backend killed under load | {k['lost']} of {k['requests']} requests lost "
          "| 0 |")
    print(f"| gateway SIGKILLed under load | {g['answered_without_row']} of {g['answered']} "
          "answered requests without a telemetry row | 0 |")
    print(f"| {len(b['cases'])} bad requests | {b['non_4xx']} without a 4xx + error envelope "
          "| 0 |")
    u = results["budget"]
    print(f"| daily budget of 100.5 requests, {u['requests']} requests over 2 workers | "
          f"{u['answered']} answered, {u['refused_429']} refused (429), {u['other']} other; "
          f"spent ${u['spent_usd']:.6f} of ${u['budget_usd']:.6f} | 100 answered, none over |")


if __name__ == "__main__":
    main()
