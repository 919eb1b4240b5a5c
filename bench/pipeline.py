"""Pipeline benchmark: build + baselines on DynaMath and on synthetic long-format Parquet
benches (1M x 20 and 2M x 50, read in row batches), and validation with and without decoding
every image. Run by hand (not in CI):

    python bench/pipeline.py [--shared ../shared/data] [--sizes 1000000x20 2000000x50]
                             [--out bench/results]

Each measurement runs in a fresh process so its peak memory (ru_maxrss, which counts mapped
pages while they are resident) is its own; the synthetic file is written before, by another
process. Prints a table and writes ``pipeline.json``. Targets (design.md, issue 15):
DynaMath build + baselines < 5 s; 1M x 20 build + baselines < 60 s within 4 GB; 2M x 50
(100M records) within 4 GB.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"dynamath build+baselines": (5.0, None),
           "synthetic 1000000x20 build+baselines": (60.0, 4096.0),
           "synthetic 2000000x50 build+baselines": (None, 4096.0)}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_build(reader: str, src: Path, work: Path) -> dict[str, float]:
    from vlroute.data import READERS, build_bench
    from vlroute.evaluation import EvalSpec, evaluate_bench

    start = time.perf_counter()
    tables = READERS.get(reader)(src, work / "staging")
    read_s = time.perf_counter() - start
    bench = build_bench(tables, work / "bench", overwrite=True)
    del tables
    build_s = time.perf_counter() - start
    evaluate_bench(bench, EvalSpec(breakdown=False))
    total = time.perf_counter() - start
    return {"read_s": read_s, "build_s": build_s, "baselines_s": total - build_s,
            "total_s": total, "peak_mb": _peak_mb(),
            "samples": len(bench.samples), "models": len(bench.models)}


def child_validate(bench_dir: Path, decode: bool) -> dict[str, float]:
    from vlroute.data import load_bench
    from vlroute.data.validate import validate_bench

    start = time.perf_counter()
    report = validate_bench(load_bench(bench_dir, verify=True), decode_images=decode)
    return {"total_s": time.perf_counter() - start, "peak_mb": _peak_mb(),
            "images": report.stats["images"], "errors": len(report.errors)}


def child_synth(path: Path, n: int, m: int = 20) -> dict[str, float]:
    """A long-format Parquet file of n samples x m models, written 100K samples at a time
    (the generator must not hold 100M rows either)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    models = pa.array([f"model-{k:02d}" for k in range(m)])
    rates = np.linspace(0.2, 0.8, m)
    question = "What is the value of x in the figure?"
    writer = None
    step = 100_000
    for start in range(0, n, step):
        count = min(step, n - start)
        ids = np.char.add("s", np.arange(start, start + count).astype(str))
        model_idx = np.tile(np.arange(m, dtype=np.int32), count)
        table = pa.table({
            "sample_id": pa.array(np.repeat(ids, m)).dictionary_encode(),
            "model": pa.DictionaryArray.from_arrays(pa.array(model_idx), models),
            "score": (rng.random(count * m) < np.tile(rates, count)).astype(float),
            "group": pa.array(np.repeat(np.char.add("g", (np.arange(start, start + count)
                                                          // 5).astype(str)), m))
            .dictionary_encode(),
            "question": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(count * m, dtype=np.int32)), pa.array([question])),
            "params_b": np.tile(np.linspace(1, 80, m), count)})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    return {"rows": float(n * m)}


def run_child(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sizes", nargs="+", default=["1000000x20", "2000000x50"],
                        help="synthetic benches, SAMPLESxMODELS")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "build":
            result = child_build(rest[0], Path(rest[1]), Path(rest[2]))
        elif kind == "validate":
            result = child_validate(Path(rest[0]), rest[1] == "decode")
        else:
            result = child_synth(Path(rest[0]), int(rest[1]), int(rest[2]))
        print(json.dumps(result))
        return
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows["dynamath build+baselines"] = run_child("build", "jsonl",
                                                     str(args.shared / "dynamath"),
                                                     str(work / "dyn"))
        for mode in ("header", "decode"):
            rows[f"dynamath validate ({mode})"] = run_child("validate",
                                                            str(work / "dyn" / "bench"), mode)
        for size in args.sizes:
            n, m = size.split("x")
            synth = work / f"synthetic-{size}.parquet"
            run_child("synth", str(synth), n, m)
            rows[f"synthetic {size} build+baselines"] = run_child(
                "build", "parquet", str(synth), str(work / f"syn-{size}"))
            synth.unlink()
            shutil.rmtree(work / f"syn-{size}")
    print(f"{'step':38} {'seconds':>9} {'peak MB':>9} {'size':>16} {'target':>16}")
    for name, r in rows.items():
        size = (f"{int(r['samples'])} x {int(r['models'])}" if "samples" in r
                else f"{int(r['images'])} images")
        limit = TARGETS.get(name)
        target = "" if not limit else ", ".join(
            [*([f"< {limit[0]:g} s"] if limit[0] else []),
             *([f"< {limit[1]:g} MB"] if limit[1] else [])])
        print(f"{name:38} {r['total_s']:9.2f} {r['peak_mb']:9.0f} {size:>16} {target:>16}")
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                       "platform": platform.platform()}, "targets": TARGETS, "rows": rows}
    (args.out / "pipeline.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out / 'pipeline.json'}")


if __name__ == "__main__":
    main()
