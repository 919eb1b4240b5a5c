"""Past one process: features and eval on DynaMath, here vs on Ray (a local instance with
2 CPUs), and the out-of-core build. Run by hand (not in CI):

    python bench/scale.py [--shared ../shared/data] [--work /tmp/vlroute-scale] \
        [--seeds 5] [--routers auto,knn,prior,blend,irt,mlp] [--out bench/results] \
        [--steps ray,build] [--build-size 2000000x50]

Every step is the CLI a user runs, in its own process, timed from start to exit (the Ray
rows include starting the local instance, ~5 s):

- ``vlroute features DIR`` vs ``vlroute features DIR --ray`` (MiniLM and EfficientNet-Lite0,
  no cache), on two copies of the bench: the largest difference between the two arrays,
  and whether a kNN eval (2 seeds) on each gives the same rows (its calibration error
  aside, which a float32 tie can move in the 5th digit);
- ``vlroute eval DIR --routers R --scenario cost_weight@dev --seeds N --results F`` vs the
  same with ``--ray``: the two documents compared but for timings and timestamps;
- ``build``: a synthetic long-format Parquet file of 2M samples x 50 models (100M records)
  built into a bench and evaluated with the baselines out of core, in one process, its time
  and peak resident memory (``bench/pipeline.py``'s measurement).

Writes ``scale.json`` (a run of some steps keeps the others' entries) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _procs import CLI

from vlroute.data import READERS, build_bench


def timed(*args: str) -> float:
    start = time.perf_counter()
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False,
                         env={**os.environ, "COLUMNS": "160"})
    if out.returncode != 0:
        raise SystemExit(f"vlroute {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


def same_document(a: Path, b: Path) -> bool:
    docs = [{k: v for k, v in json.loads(p.read_text()).items()
             if k not in ("created_at", "timings")} for p in (a, b)]
    return bool(docs[0] == docs[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/vlroute-scale"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--routers", default="auto,knn,prior,blend,irt,mlp")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--steps", default="ray,build",
                        help="ray (features and eval here vs on Ray), build (out of core)")
    parser.add_argument("--build-size", default="2000000x50", help="SAMPLESxMODELS")
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    path = args.out / "scale.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    if "ray" in steps:
        doc.update(ray_steps(args))
    if "build" in steps:
        doc["build"] = build_step(args)
        b = doc["build"]
        print(f"build + baselines, {args.build_size}: {b['total_s']:.1f} s "
              f"(read {b['read_s']:.1f}, build {b['build_s'] - b['read_s']:.1f}, baselines "
              f"{b['baselines_s']:.1f}), peak {b['peak_mb']:.0f} MB")
    doc["command"] = "python bench/scale.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def build_step(args: argparse.Namespace) -> dict[str, Any]:
    """The out-of-core build and baselines of a synthetic bench, in a process of its own."""
    from pipeline import run_child

    n, m = args.build_size.split("x")
    work = args.work / "build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run_child("synth", str(work / "long.parquet"), n, m)
    try:
        result = run_child("build", "parquet", str(work / "long.parquet"), str(work / "w"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"size": args.build_size, **result}


def ray_steps(args: argparse.Namespace) -> dict[str, Any]:
    """Features and eval here vs on a local Ray instance."""
    shutil.rmtree(args.work, ignore_errors=True)
    here, ray = args.work / "here", args.work / "ray"
    build_bench(READERS.get("jsonl")(args.shared / "dynamath", args.work / "st"), here)
    shutil.copytree(here, ray)
    rows: list[dict[str, Any]] = []
    for name, where, extra in (("features", here, []), ("features", ray, ["--ray"])):
        seconds = timed("features", str(where), *extra)
        rows.append({"step": name, "runner": "ray" if extra else "here", "seconds": seconds})
    diff = {}
    for enc in ("minilm", "efficientnet-lite0"):
        a, b = (np.load(p / "features" / f"{enc}.npy") for p in (here, ray))
        diff[enc] = float(np.abs(a.astype(np.float64) - b).max())
    knn = {}
    for where in (here, ray):
        timed("eval", str(where), "--routers", "knn", "--scenario", "cost_weight@dev",
              "--seeds", "2", "--results", str(where / "knn.json"))
        knn[where.name] = [r for r in json.loads((where / "knn.json").read_text())["rows"]
                           if r["router"] == "knn"]
    metrics = [sorted(k for k in r if not k.startswith("ece")) for r in knn["here"]]
    knn_same = all({k: a[k] for k in keys} == {k: b[k] for k in keys}
                   for a, b, keys in zip(knn["here"], knn["ray"], metrics, strict=True))
    ece_diff = max(abs((a["ece"] or 0.0) - (b["ece"] or 0.0))
                   for a, b in zip(knn["here"], knn["ray"], strict=True))
    results = {}
    for extra in ([], ["--ray"]):
        out = args.work / f"eval{'-ray' if extra else ''}.json"
        seconds = timed("eval", str(here), "--routers", args.routers, "--scenario",
                        "cost_weight@dev", "--seeds", str(args.seeds), "--results", str(out),
                        *extra)
        results["ray" if extra else "here"] = out
        rows.append({"step": f"eval ({args.routers}, {args.seeds} seeds)",
                     "runner": "ray" if extra else "here", "seconds": seconds})
    equal = same_document(results["here"], results["ray"])
    doc = {"cores": os.cpu_count(), "set": "dynamath", "samples": 5010,
           "ray": "local instance started by the command (2 CPUs), one CPU per task/actor",
           "rows": rows, "features_max_abs_diff": diff,
           "knn_rows_equal_but_ece_on_either_features": knn_same,
           "knn_ece_max_abs_diff": ece_diff,
           "eval_documents_equal_but_timings": equal}
    print("\n| step | here (s) | Ray (s) |\n|---|---|---|")
    steps = dict.fromkeys(r["step"] for r in rows)
    for step in steps:
        t = {r["runner"]: r["seconds"] for r in rows if r["step"] == step}
        print(f"| {step} | {t['here']:.1f} | {t['ray']:.1f} |")
    print(f"features: largest difference {diff}; kNN rows on either equal but for ECE: "
          f"{knn_same} (ECE differs by at most {ece_diff:.2g})")
    print(f"eval documents equal but for timings: {equal}")
    return doc


if __name__ == "__main__":
    main()
