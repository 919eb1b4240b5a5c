"""What the collect, judge and loop tests share: small real subsets of the shared sets, and
the dev stand-ins (edge, cloud, judge) as processes that know the subset's answers."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from conftest import needs_shared
from conftest import run_cli as _run_cli

from tests._process import free_port, stop, wait_for
from vlroute.serve.dev_backends import spawn

NAMES = ("edge", "cloud", "judge")


def run_cli(*args: object) -> str:
    """The CLI's output with its lines joined (the console wraps long lines)."""
    return " ".join(_run_cli(*args).split())


def dynamath_subset(root: Path, n: int = 24) -> Path:
    """``n`` DynaMath samples, one variant per seed question (so no two share a prompt),
    with their images, as a set folder (samples.jsonl and set.json)."""
    src = needs_shared("dynamath")
    with (src / "samples.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in itertools.islice(handle, 0, 10 * n, 10)]
    (root / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        for rel in row["images"]:
            shutil.copyfile(src / rel, root / rel)
    _write(root / "samples.jsonl", rows)
    (root / "set.json").write_text(json.dumps({"name": "dynamath-sub", "label": "binary",
                                               "license": "MIT"}))
    return root


def vibe_subset(root: Path, n: int = 40) -> Path:
    """The first ``n`` Vibe-Eval samples with every model's outcome (responses and 1-5
    scores), as a set folder."""
    src = needs_shared("vibe_eval")
    samples = [json.loads(line) for line in
               (src / "samples.jsonl").read_text("utf-8").splitlines()][:n]
    keep = {s["sample_id"] for s in samples}
    outcomes = [o for o in map(json.loads, (src / "outcomes.jsonl").read_text(
        "utf-8").splitlines()) if o["sample_id"] in keep]
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "samples.jsonl", samples)
    _write(root / "outcomes.jsonl", outcomes)
    shutil.copyfile(src / "models.jsonl", root / "models.jsonl")
    shutil.copyfile(src / "set.json", root / "set.json")
    return root


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@contextmanager
def stand_ins(answers: Path, log: Path) -> Iterator[dict[str, int]]:
    """The three stand-ins as processes knowing ``answers``; yields their ports."""
    ports = {name: free_port() for name in NAMES}
    procs: list[subprocess.Popen[bytes]] = []
    with log.open("wb") as out:
        try:
            for name, port in ports.items():
                procs.append(spawn(name, port, {}, log=out, answers=answers))
            for port in ports.values():
                wait_for(f"http://127.0.0.1:{port}/v1/models")
            yield ports
        finally:
            stop(procs)


def set_fault(port: int, **fault: Any) -> None:
    """Replace a stand-in's fault (and restart its counts)."""
    httpx.post(f"http://127.0.0.1:{port}/admin/faults", json=fault, timeout=10
               ).raise_for_status()


def answered(port: int) -> dict[str, int]:
    """Request key -> 200 answers of a stand-in since its last fault change."""
    return dict(httpx.get(f"http://127.0.0.1:{port}/admin/calls", timeout=10).json()[
        "answered"])


def backends_yaml(path: Path, ports: dict[str, int], timeout_s: float = 2.0) -> Path:
    """A gateway-style config with the edge (free, 20 W) and cloud (priced) stand-ins."""
    path.write_text(f"""
backends:
  - {{name: edge, base_url: "http://127.0.0.1:{ports['edge']}/v1", model: small, tier: edge,
     router_model: edge-2b, power_w: 20, max_concurrency: 4, timeout_s: {timeout_s}}}
  - {{name: cloud, base_url: "http://127.0.0.1:{ports['cloud']}/v1", model: big, tier: cloud,
     router_model: cloud-72b, price_in_per_1m: 1.0, price_out_per_1m: 4.0,
     timeout_s: {timeout_s}}}
""")
    return path


def judge_yaml(path: Path, ports: dict[str, int], concurrency: int = 4, **extra: Any) -> Path:
    """A judge config for the stub judge stand-in."""
    doc = {"judge": {"name": "judge", "base_url": f"http://127.0.0.1:{ports['judge']}/v1",
                     "model": "stub-judge", "vision": False, "max_concurrency": concurrency,
                     "timeout_s": 5}, **extra}
    path.write_text(json.dumps(doc))
    return path


def outcomes(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "outcomes.jsonl").read_text(
        "utf-8").splitlines()]
