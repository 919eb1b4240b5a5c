"""Collect throughput against an instant backend, beside a bare aiohttp loop. Run by hand:

    python bench/collect.py [--requests 600] [--runs 3] [--out bench/results]

A set of ``--requests`` samples, each a question and a 200 KB image (8 distinct PNGs of
noise, cycled), is collected from one backend: an instant OpenAI-compatible server (a bare
ASGI app under uvicorn that reads the body and answers a fixed streamed reply with usage)
pinned to core 1. The client under test runs alone on core 0:

- ``collect``: ``vlroute collect`` as a user runs it (the CLI, progress bar included:
  streaming, the journal and its fsyncs, retries armed, the run folder written at the end),
  at concurrency 1, 8 and 32; its requests/s are the calls over the time its calls took
  (``calls_s`` in ``run.json``: from the first call sent to the last result fsynced,
  progress bar updates included), beside the command's whole wall time (interpreter start,
  imports, reading the set, writing the run folder);
- ``bare aiohttp``: a loop of aiohttp posts with the same work per request (read the image
  file, base64 it into a data URL with pybase64 as collect does, serialise the body with
  orjson, read the whole answer)
  and nothing else, at the same concurrency, timed from its first call to its last answer;
- ``bare aiohttp, spliced body`` (at 32): the same loop building the body as collect does
  (serialised with a slot for the image URL, the base64 bytes joined in), so that the
  ratio to it shows collect's own bookkeeping alone.

Every target runs ``--runs`` times; the table and ``collect.json`` give the median run. The
target: collect at 32 reaches at least 90% of the bare loop's rate at 32. Beside the rates,
the CPU each client spends per call (user + system seconds of its process, less those of
the same command run without calls: collect run again on its finished folder, the bare
loop with no requests), which a neighbour's load on a shared machine moves far less.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _procs
import numpy as np
from _procs import CLI, free_port, wait_for
from PIL import Image

SERVER = r"""
import json, sys, uvicorn
words = "The answer is 42 and nothing else .".split()
head = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "instant"}
events = [("data: " + json.dumps({**head, "choices": [{"index": 0, "delta": {"content": w + " "},
          "finish_reason": None}]}) + "\n\n").encode() for w in words]
events.append(("data: " + json.dumps({**head, "choices": [], "usage": {"prompt_tokens": 900,
               "completion_tokens": len(words), "total_tokens": 900 + len(words)}})
               + "\n\n").encode())
events.append(b"data: [DONE]\n\n")
stream = b"".join(events)
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "GET":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"data": []}'})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": stream})
uvicorn.run(app, port=int(sys.argv[1]), log_level="warning", http="httptools", loop="uvloop",
            backlog=4096)
"""

BARE = r"""
import asyncio, json, os, sys, time
from pathlib import Path
import aiohttp, orjson, pybase64
root, url, concurrency = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
splice = len(sys.argv) > 4
rows = [json.loads(l) for l in (root / "samples.jsonl").read_text().splitlines()]
rows = rows[:int(os.environ.get("BARE_REQUESTS", len(rows)))]
async def main():
    queue = list(reversed(rows))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker():
            while queue:
                row = queue.pop()
                image = pybase64.b64encode((root / row["images"][0]).read_bytes())
                url_ = "@slot@" if splice else "data:image/png;base64," + image.decode()
                body = orjson.dumps({"model": "instant", "max_tokens": 512, "stream": True,
                    "messages": [{"role": "user", "content": [
                        {"type": "text", "text": row["question"]},
                        {"type": "image_url", "image_url": {"url": url_}}]}]})
                if splice:
                    head, _, tail = body.partition(b"@slot@")
                    body = b"".join([head, b"data:image/png;base64,", image, tail])
                async with session.post(url, data=body,
                                        headers={"content-type": "application/json"}) as r:
                    await r.read()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start
print(json.dumps({"seconds": asyncio.run(main()), "requests": len(rows)}))
"""


def make_set(root: Path, n: int, kb: int = 200) -> None:
    """``n`` samples, each with one of 8 noise PNGs of about ``kb`` KB."""
    (root / "images").mkdir(parents=True)
    side = int((kb * 1024 / 3) ** 0.5)
    for k in range(8):
        pixels = np.random.default_rng(k).integers(0, 256, (side, side, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
        (root / "images" / f"noise{k}.png").write_bytes(buf.getvalue())
    rows = [{"sample_id": f"s{i}", "dataset": "bench", "group": f"s{i}", "task": None,
             "question": f"What is in this picture? ({i})",
             "images": [f"images/noise{i % 8}.png"], "answer": None, "meta": {}}
            for i in range(n)]
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def pinned(cmd: list[str], core: int, **kwargs: Any
           ) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``cmd`` on ``core``; its result and the CPU seconds (user + system) it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(["taskset", "-c", str(core), *cmd], capture_output=True, text=True,
                          check=True, **kwargs)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_collect(root: Path, config: Path, concurrency: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"run-{concurrency}-{time.monotonic_ns()}"
    command = [*CLI, "collect", str(root), "--backends", str(config), "--out", str(out),
               "--concurrency", str(concurrency)]
    env = {**os.environ, "COLUMNS": "120"}
    start = time.perf_counter()
    _, cpu = pinned(command, 0, env=env)
    wall = time.perf_counter() - start
    report = json.loads((out / "run.json").read_text())
    assert report["made"] == report["planned"] and report["failed"] == 0, report
    # the same command again repeats no call: what it costs is the command without its calls
    # (start, planning, reading the journal, writing the run folder)
    _, rest = pinned(command, 0, env=env)
    shutil.rmtree(out)
    return {"seconds": report["calls_s"], "wall_s": wall, "requests": report["made"],
            "rps": report["made"] / report["calls_s"],
            "cpu_ms_per_call": 1e3 * (cpu - rest) / report["made"]}


def run_bare(root: Path, url: str, concurrency: int, splice: bool = False) -> dict[str, Any]:
    extra = ["splice"] if splice else []
    done, cpu = pinned([sys.executable, "-c", BARE, str(root), url, str(concurrency), *extra],
                       0)
    doc = json.loads(done.stdout)
    _, rest = pinned([sys.executable, "-c", BARE, str(root), url, str(concurrency), *extra],
                     0, env={**os.environ, "BARE_REQUESTS": "0"})
    return {**doc, "rps": doc["requests"] / doc["seconds"],
            "cpu_ms_per_call": 1e3 * (cpu - rest) / doc["requests"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if not shutil.which("taskset"):
        sys.exit("needs taskset: apt-get install util-linux")
    tmp = Path(tempfile.mkdtemp(prefix="vlroute-collectbench-"))
    root = tmp / "set"
    make_set(root, args.requests)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    config = tmp / "backends.yaml"
    config.write_text(json.dumps({"backends": [{
        "name": "instant", "base_url": url, "model": "instant", "price_in_per_1m": 1.0,
        "price_out_per_1m": 1.0, "max_concurrency": 64}]}))
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", SERVER, str(port)],
                              stdout=log, stderr=log)
    runs: list[list[dict[str, Any]]] = []
    try:
        wait_for(f"{url}/models")
        for _ in range(args.runs):
            run = [{"target": "collect", "concurrency": c,
                    **run_collect(root, config, c, tmp)} for c in (1, 8, 32)]
            run += [{"target": "bare aiohttp", "concurrency": c,
                     **run_bare(root, f"{url}/chat/completions", c)} for c in (1, 8, 32)]
            run += [{"target": "bare aiohttp, spliced body", "concurrency": 32,
                     **run_bare(root, f"{url}/chat/completions", 32, splice=True)}]
            runs.append(run)
    finally:
        _procs.stop(server)
        log.close()
    rows = [{**r, "rps": float(np.median([run[i]["rps"] for run in runs]))}
            for i, r in enumerate(runs[0])]
    rps = {(r["target"], r["concurrency"]): r["rps"] for r in rows}
    ratio = rps[("collect", 32)] / rps[("bare aiohttp", 32)]
    spliced = rps[("collect", 32)] / rps[("bare aiohttp, spliced body", 32)]
    # the ratio of each run's own collect and bare rates (measured a few seconds apart, so
    # slower spells of a shared machine hit both): the median and the spread
    paired = sorted(run[2]["rps"] / run[5]["rps"] for run in runs)
    # CPU per call (the client's user + system seconds, its command run without calls
    # subtracted): what a neighbour's load on a shared machine moves far less than rates
    cpu = {(r["target"], r["concurrency"]): float(np.median([run[i]["cpu_ms_per_call"]
                                                             for run in runs]))
           for i, r in enumerate(runs[0])}
    cpu_ratio = cpu[("bare aiohttp", 32)] / cpu[("collect", 32)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "collect.json").write_text(json.dumps({
        "cores": os.cpu_count(), "requests": args.requests, "image_kb": 200,
        "pinning": "client under test alone on core 0, the instant backend on core 1",
        "timed": "the calls alone (collect: run.json calls_s; bare: first call to last "
                 "answer); collect's wall_s is the whole command",
        "runs": args.runs, "statistic": "median over runs",
        "rows": rows, "collect_vs_bare_at_32": ratio,
        "collect_vs_bare_at_32_per_run": paired,
        "collect_vs_bare_at_32_paired_median": float(np.median(paired)),
        "collect_vs_spliced_bare_at_32": spliced, "target": 0.9,
        "cpu_ms_per_call": {f"{t} at {c}": v for (t, c), v in cpu.items()},
        "bare_cpu_over_collect_cpu_at_32": cpu_ratio,
        "every_run": runs}, indent=1) + "\n")
    print("\n| client | concurrency | req/s | CPU ms per call |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['concurrency']} | {r['rps']:.0f} | "
              f"{cpu[(r['target'], r['concurrency'])]:.3f} |")
    print(f"collect at 32 reaches {100 * ratio:.1f}% of the bare loop's rate (target 90%); "
          f"per run {100 * paired[0]:.0f}-{100 * paired[-1]:.0f}%, median "
          f"{100 * float(np.median(paired)):.0f}%; {100 * spliced:.1f}% of a bare loop that "
          "splices the body as collect does.")
    print(f"CPU per call at 32: collect {cpu[('collect', 32)]:.3f} ms, bare "
          f"{cpu[('bare aiohttp', 32)]:.3f} ms: a CPU-bound collect would reach "
          f"{100 * cpu_ratio:.1f}% of the bare loop's rate.")


if __name__ == "__main__":
    main()
