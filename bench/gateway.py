"""Gateway overhead on loopback, side by side with the LiteLLM proxy. Run by hand:

    python bench/gateway.py [--seconds 10] [--runs 3] [--artifact demo-out/router-qwen2-vl] \
        [--out bench/results]

An instant stub backend (``vlroute dev-backends``' app) answers every call. Load comes from
``wrk`` (Debian's package) with a POST body; each server runs pinned to a stated core
(``taskset``): one server under test at a time, alone on core 0 (vlroute's torch told so with
``OMP_NUM_THREADS=1``), the stub backend and wrk on core 1. Measured
for 1 and 16 connections, a text-only body and a body with a 200 KB base64 image:

- ``direct``: the stub backend itself (the baseline that "added" latency is taken against);
- ``vlroute pass-through``: ``model`` names the backend (no routing), telemetry on;
- ``vlroute routing``: ``model`` = ``vlroute/auto``, with the demo's serving bundle for the
  Qwen2-VL pair and its encoders when ``--artifact`` exists (else the training-free
  decision), feature cache off;
- ``vlroute routing, cached features``: the same with the feature cache on, so every request
  after the first finds its features there (what a repeated request costs);
- ``vlroute routing onnx`` and ``vlroute routing onnx int8``: ``vlroute/auto`` with the
  feature cache off on ``router.runtime: onnx`` (the bundle's encoders as ONNX graphs on
  onnxruntime, one intra-op thread; no torch imported), fp32 and int8 graphs; the bundle is
  exported first (``vlroute export onnx --quantize int8``) when it carries no graphs yet. The
  torch rows say ``runtime: torch`` explicitly;
- ``litellm``: LiteLLM proxy ``litellm[proxy]==1.106.2``, one worker, installed by this
  script into its own venv (``--litellm-venv``).
Every target is measured ``--runs`` times, LiteLLM in the same runs; the table and JSON give
the median run of each (p50, p99 and req/s medians taken separately), the JSON every run too.
Writes ``gateway.json`` (``--name``) and prints a table; with ``--only`` the JSON is written
only under another ``--name``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _procs
import httpx
import numpy as np
from _procs import CLI, free_port, wait_for
from PIL import Image

LITELLM = "litellm[proxy]==1.106.2"
#: LiteLLM refuses to start without a master key; requests to it carry this one
MASTER_KEY = "sk-vlroute-bench-0123456789abcdef"


def image_body(kb: int = 200) -> str:
    """A PNG of noise close to ``kb`` KB, as a data URL."""
    side = int((kb * 1024 / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def bodies(model: str) -> dict[str, dict[str, Any]]:
    text = {"role": "user", "content": "What is the capital of France? Answer in one word."}
    image = {"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": image_body()}}]}
    return {"text": {"model": model, "messages": [text]},
            "image_200kb": {"model": model, "messages": [image]}}


def wrk(url: str, body: dict[str, Any], connections: int, seconds: float, tmp: Path,
        headers: dict[str, str]) -> dict[str, float]:
    payload = tmp / "body.json"
    payload.write_text(json.dumps(body))
    script = tmp / "post.lua"
    script.write_text('local f = io.open("' + str(payload) + '", "rb")\n'
                      'wrk.method = "POST"\nwrk.body = f:read("*all")\nf:close()\n'
                      'wrk.headers["Content-Type"] = "application/json"\n'
                      + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items()))
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}",
                          f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"p50_ms": ms("50"), "p99_ms": ms("99"),
            "rps": float(rps.group(1)) if rps else float("nan"),
            "non_2xx": int(errors.group(1)) if errors else 0}


def start(cmd: list[str], core: int, log: Any, env: dict[str, str] | None = None
          ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["taskset", "-c", str(core), *cmd], stdout=log, stderr=log,
                            env={**os.environ, **(env or {})})


def stop(proc: subprocess.Popen[bytes]) -> None:
    _procs.stop(proc, timeout_s=20)


def litellm_bin(venv: Path) -> str:
    """The ``litellm`` command of its own venv (made and filled on first use)."""
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", LITELLM], check=True)
    return str(venv / "bin" / "litellm")


def measure(name: str, port: int, model: str, headers: dict[str, str], seconds: float,
            tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for kind, body in bodies(model).items():
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        warm = httpx.post(url, json=body, headers=headers, timeout=60)
        if warm.status_code != 200:
            raise RuntimeError(f"{name}: {warm.status_code} {warm.text[:300]}")
        for connections in (1, 16):
            r = wrk(url, body, connections, seconds, tmp, headers)
            rows.append({"target": name, "body": kind, "connections": connections, **r})
            print(f"{name:22} {kind:12} c={connections:2} p50 {r['p50_ms']:8.2f} ms "
                  f"p99 {r['p99_ms']:8.2f} ms {r['rps']:9.1f} req/s "
                  f"non-2xx {r['non_2xx']}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--artifact", type=Path, default=Path("demo-out/router-qwen2-vl"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--litellm-venv", type=Path, default=Path("/tmp/litellm-venv"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--only", default="", help="comma-separated targets to run (direct is "
                        "always run); the JSON is written only under another --name then")
    parser.add_argument("--name", default="gateway.json", help="the JSON file's name")
    args = parser.parse_args()
    only = {t.strip() for t in args.only.split(",") if t.strip()}
    if not shutil.which("wrk") or not shutil.which("taskset"):
        sys.exit("needs wrk and taskset: apt-get install wrk util-linux")
    tmp = Path(tempfile.mkdtemp(prefix="vlroute-gwbench-"))
    log = (tmp / "log.txt").open("wb")
    backend, vl_port, ll_port = free_port(), free_port(), free_port()
    procs = [start([sys.executable, "-c", "import uvicorn; from vlroute.serve.dev_backends "
                    f"import stub_app; uvicorn.run(stub_app('stub'), port={backend}, "
                    "log_level='warning')"], 1, log)]
    artifact = args.artifact.resolve() if (args.artifact / "router.json").is_file() else None
    settings = {
        "backends": [{"name": "stub", "base_url": f"http://127.0.0.1:{backend}/v1",
                      "model": "stub", "router_model": "Qwen2-VL-72B-Instruct",
                      "tier": "cloud", "price_in_per_1m": 1.0},
                     {"name": "stub-edge", "base_url": f"http://127.0.0.1:{backend}/v1",
                      "model": "stub", "router_model": "Qwen2-VL-7B-Instruct",
                      "tier": "edge"}],
        # wrk repeats one body: the feature cache would answer all but the first request
        "router": {"artifact": str(artifact) if artifact else None, "cache_size": 0,
                   "runtime": "torch"},
        "telemetry": {"url": f"sqlite:///{tmp / 'telemetry.db'}"},
        "limits": {"max_body_bytes": 5_000_000}}
    config, cached = tmp / "gateway.yaml", tmp / "gateway-cached.yaml"
    config.write_text(json.dumps(settings))
    cached.write_text(json.dumps({**settings, "router": {**settings["router"],
                                                         "cache_size": 4096}}))
    onnx = {v: tmp / f"gateway-onnx-{v}.yaml" for v in ("fp32", "int8")}
    for variant, path in onnx.items():
        path.write_text(json.dumps({**settings, "router": {
            **settings["router"], "runtime": "onnx", "onnx_variant": variant}}))
    wants_onnx = not only or any("onnx" in t for t in only)
    if artifact and wants_onnx and not (artifact / "onnx.json").is_file():
        subprocess.run([*CLI, "export", "onnx", str(artifact), "--quantize", "int8"],
                       check=True)
    ll_config = tmp / "litellm.yaml"
    ll_config.write_text(f"""general_settings: {{master_key: "{MASTER_KEY}"}}
model_list:
  - model_name: stub
    litellm_params: {{model: openai/stub, api_base: "http://127.0.0.1:{backend}/v1",
                      api_key: "none"}}
""")
    # one server under test at a time, alone on core 0 (torch told it has one core)
    servers: list[tuple[str, Any, int, list[tuple[str, str, dict[str, str]]]]] = [
        ("direct", None, backend, [("direct", "stub", {})]),
        ("vlroute", lambda: start([*CLI, "serve", "--config", str(config), "--port",
                                   str(vl_port)], 0, log, {"OMP_NUM_THREADS": "1"}),
         vl_port, [("vlroute pass-through", "stub", {}),
                   ("vlroute routing", "vlroute/auto", {})]),
        ("vlroute", lambda: start([*CLI, "serve", "--config", str(cached), "--port",
                                   str(vl_port)], 0, log, {"OMP_NUM_THREADS": "1"}),
         vl_port, [("vlroute routing, cached features", "vlroute/auto", {})]),
        *[("vlroute", lambda path=path: start([*CLI, "serve", "--config", str(path), "--port",
                                                str(vl_port)], 0, log,
                                               {"OMP_NUM_THREADS": "1"}),
           vl_port, [(f"vlroute routing onnx{' int8' if v == 'int8' else ''}",
                      "vlroute/auto", {})]) for v, path in onnx.items()],
        ("litellm", lambda: start([litellm_bin(args.litellm_venv), "--config",
                                   str(ll_config), "--port", str(ll_port), "--num_workers",
                                   "1"], 0, log),
         ll_port, [("litellm", "stub", {"Authorization": f"Bearer {MASTER_KEY}"})])]
    health = {"direct": "/v1/models", "vlroute": "/health", "litellm": "/health/liveliness"}
    runs: list[list[dict[str, Any]]] = []
    try:
        wait_for(f"http://127.0.0.1:{backend}/v1/models")
        for _ in range(args.runs):
            run: list[dict[str, Any]] = []
            for server, launch, port, targets in servers:
                targets = [t for t in targets if not only or t[0] == "direct" or t[0] in only]
                if not targets:
                    continue
                proc = launch() if launch else None
                try:
                    wait_for(f"http://127.0.0.1:{port}{health[server]}")
                    for name, model, headers in targets:
                        run += measure(name, port, model, headers, args.seconds, tmp)
                finally:
                    if proc is not None:
                        stop(proc)
            runs.append(run)
    finally:
        stop(procs[0])
        log.close()
    rows = [{**r, **{k: float(np.median([run[i][k] for run in runs]))
                     for k in ("p50_ms", "p99_ms", "rps")}} for i, r in enumerate(runs[0])]
    direct = {(r["body"], r["connections"]): r for r in rows if r["target"] == "direct"}
    for r in rows:
        base = direct[(r["body"], r["connections"])]
        r["added_p50_ms"] = r["p50_ms"] - base["p50_ms"]
        r["added_p99_ms"] = r["p99_ms"] - base["p99_ms"]
    if only and args.name == "gateway.json":
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / args.name).write_text(json.dumps({
        "cores": os.cpu_count(),
        "pinning": "one server under test at a time, alone on core 0 (vlroute with "
                   "OMP_NUM_THREADS=1; on the onnx runtime one intra-op thread); stub "
                   "backend and wrk on core 1", "only": sorted(only),
        "seconds": args.seconds, "artifact": str(artifact), "litellm": LITELLM,
        "runs": args.runs, "statistic": "median over runs", "rows": rows,
        "every_run": runs}, indent=1) + "\n")
    print("\n| target | body | conns | added p50 ms | added p99 ms | req/s |\n|---|---|---|---|"
          "---|---|")
    for r in rows:
        if r["target"] != "direct":
            print(f"| {r['target']} | {r['body']} | {r['connections']} | "
                  f"{r['added_p50_ms']:.2f} | {r['added_p99_ms']:.2f} | {r['rps']:.0f} |")
    ll = {(r["body"], r["connections"]): r for r in rows if r["target"] == "litellm"}
    for r in rows:
        other = ll.get((r["body"], r["connections"]))
        if r["target"] == "vlroute pass-through" and other:
            print(f"pass-through vs LiteLLM, {r['body']}, c={r['connections']}: "
                  f"{other['added_p50_ms'] / max(r['added_p50_ms'], 1e-3):.1f}x less added p50, "
                  f"{r['rps'] / other['rps']:.1f}x the req/s")


if __name__ == "__main__":
    main()
