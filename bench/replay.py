"""The gateway serves what eval measured, with the real encoders. Run by hand:

    python bench/replay.py [--demo demo-out] [--out bench/results]

For each bundle the demo writes (``router``: every model; ``router-qwen2-vl``: the pair the
example gateway serves), ``vlroute eval BENCH --artifact BUNDLE --decisions F`` writes each
test sample's choice; then a gateway process (``vlroute serve``) with one backend per bundle
candidate, MiniLM + EfficientNet-Lite0 and the feature cache off, gets every test sample as a
client would send it (question text and image as a data URL) on ``/v1/route``. The choices
are compared: equal, near-ties (decision margin under 1e-6) and real disagreements. Runs
``vlroute demo`` first when ``--demo`` has no bench. Writes ``replay.json`` and prints a table.

``--runtime onnx`` replays through ``router.runtime: onnx`` (the bundles' fp32 ONNX graphs,
exported first with ``vlroute export onnx`` when a bundle has none) and writes
``replay-onnx.json``; the default ``torch`` is set explicitly, so an exported bundle is still
replayed on torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from _procs import CLI, free_port, wait_for

from vlroute.data import load_bench
from vlroute.routers.bundle import load_bundle
from vlroute.serve.replay import compare, read_decisions, replay_config, replay_requests

BUNDLES = ("router", "router-qwen2-vl")


def replay(demo: Path, name: str, work: Path, runtime: str = "torch") -> dict[str, object]:
    """Eval's decisions for bundle ``name`` against the gateway's, on the test split."""
    artifact, decisions = demo / name, work / f"{name}.jsonl"
    subprocess.run([*CLI, "eval", str(demo / "bench"), "--artifact", str(artifact),
                    "--decisions", str(decisions)], check=True, capture_output=True)
    rows = read_decisions(decisions)
    bundle = load_bundle(artifact)
    config = replay_config(artifact.resolve(), list(bundle.candidates), "minilm",
                           "efficientnet-lite0", f"sqlite:///{work / (name + '.db')}")
    config["router"]["runtime"] = runtime
    if runtime == "onnx" and not (artifact / "onnx.json").is_file():
        subprocess.run([*CLI, "export", "onnx", str(artifact)], check=True,
                       capture_output=True)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    server = subprocess.Popen([*CLI, "serve", "--config", str(path), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    served: dict[str, str] = {}
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        start = time.perf_counter()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for sid, body in replay_requests(load_bench(demo / "bench"),
                                             [r["sample_id"] for r in rows]):
                reply = client.post("/v1/route", json=body)
                reply.raise_for_status()
                served[sid] = reply.json()["router_model"]
        seconds = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = compare(rows, served)
    return {"bundle": name, "runtime": runtime, "scenario": bundle.scenario.spec(),
            "candidates": list(bundle.candidates), "seconds": round(seconds, 2), **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("demo-out"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch")
    args = parser.parse_args()
    if not (args.demo / "bench" / "manifest.json").is_file() or \
            not all((args.demo / b / "router.json").is_file() for b in BUNDLES):
        subprocess.run([*CLI, "demo", "--out", str(args.demo)], check=True,
                       stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="vlroute-replay-") as tmp:
        results = [replay(args.demo, name, Path(tmp), args.runtime) for name in BUNDLES]
    args.out.mkdir(parents=True, exist_ok=True)
    name = "replay.json" if args.runtime == "torch" else f"replay-{args.runtime}.json"
    (args.out / name).write_text(json.dumps(
        {"encoders": ["minilm", "efficientnet-lite0"], "runtime": args.runtime,
         "cache": "off", "split": "test", "bundles": results}, indent=1) + "\n")
    print("| bundle | scenario | test samples | equal | near-ties | disagreements | s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['bundle']} | {r['scenario']} | {r['samples']} | {r['equal']} | "
              f"{len(r['near_ties'])} | {len(r['disagreements'])} | {r['seconds']} |")


if __name__ == "__main__":
    main()
