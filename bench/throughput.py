"""Decision latency and throughput of every router under one harness. Run by hand:

    python bench/throughput.py BENCH_DIR [--routers knn,linear,gbdt,...] [--out bench/results]

BENCH_DIR needs stored MiniLM + EfficientNet-Lite0 features (`vlroute features BENCH_DIR`).
Routers are fitted on the train split and timed on test requests: batches 1 / 16 / 64, 3
warm-up and 20 timed runs, with features precomputed and with the offline encoders run inside
the timed region (question text + one image per request). Reports requests/s and, as
VL-RouterBench does, routed prompt K tokens/s. Prints a table, writes ``throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

from vlroute.data import load_bench
from vlroute.evaluation.throughput import measure
from vlroute.features.fusion import Fusion
from vlroute.features.registry import make_encoder
from vlroute.features.store import bench_items, feature_matrix
from vlroute.metrics import cost_bounds
from vlroute.routers import BASELINES, LEARNED, make_router
from vlroute.routers.policy import PolicyRouter
from vlroute.scenarios import PRESETS, Scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bench", type=Path)
    parser.add_argument("--routers", default=",".join((*LEARNED, *BASELINES)))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    bench = load_bench(args.bench)
    m = bench.matrices()
    X, _ = feature_matrix(bench, "minilm", "efficientnet-lite0")
    items = bench_items(bench)
    text, image = make_encoder("minilm"), make_encoder("efficientnet-lite0")

    def featurize(rows: np.ndarray) -> np.ndarray:
        chosen = [items[i] for i in np.flatnonzero(m.splits == "test")[rows]]
        return Fusion()(text.encode(chosen), image.encode(chosen))

    train, test = m.split("train"), m.split("test")
    bounds = cost_bounds(m.cost)
    rows = []
    for name in args.routers.split(","):
        router = make_router(name)
        router.fit(train, bounds=bounds, X=X[m.splits == "train"] if router.needs_features
                   else None)
        # policy routers decide only as trained (utility, cost_weight 0); the rest under the
        # quality preset (threshold family)
        scenario = (Scenario("as_trained", cost_weight=0.0) if isinstance(router, PolicyRouter)
                    else PRESETS["quality"])
        for r in measure(router, test, scenario, X=X[m.splits == "test"],
                         featurize=featurize if router.needs_features else None):
            rows.append({"router": name, **r})
            print(f"{name:22} encoders={r['with_encoders']!s:5} batch={r['batch']:3} "
                  f"p50 {r['ms_p50']:8.3f} ms  p99 {r['ms_p99']:8.3f} ms  "
                  f"{r['requests_per_s']:10.1f} req/s  "
                  f"{r['prompt_ktokens_per_s']:10.1f} K prompt tokens/s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"bench": bench.name, "machine": {"cpus": os.cpu_count(),
                                            "python": platform.python_version()}, "rows": rows}
    (args.out / "throughput.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out / 'throughput.json'}")


if __name__ == "__main__":
    main()
