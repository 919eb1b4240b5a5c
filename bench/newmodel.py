"""A new model without retraining (``vlroute models add``), leave-one-model-out on DynaMath.
Run by hand (after bench/routers.py has built the bench and its features):

    python bench/newmodel.py [--bench /tmp/vlroute-benches/dynamath] [--seeds 3] \
        [--routers irt,mf] [--sizes 25,50,100] [--out bench/results]

For each seed (grouped splits, as `vlroute eval`) and router: fit it on all models and tune
cost_weight on dev (full retraining); then, for each held-out model h, fit it on the other
models, tune cost_weight on dev among them, and add h from n labelled train samples of h
(random train requests, the same for every router; h's other labels unseen), keeping that
cost_weight (the dev labels of h are not used: a user adding a model has only its n samples).
The cost bounds stay the whole bench's and h's mean cost is its train mean (the CLI's cost
estimate from prices is tested in tests/test_cli_models.py, not here). Test Rank Score of the
14-model decision: added vs full retraining, mean over held-out models. Writes
``newmodel.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from vlroute.data import load_bench
from vlroute.evaluation.runner import _seed_matrices, tune_cost_weight
from vlroute.evaluation.scoring import ScoringContext, reference_model, score
from vlroute.features.store import feature_matrix
from vlroute.metrics import cost_bounds
from vlroute.routers import make_router
from vlroute.routers.extend import add_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bench", type=Path, default=Path("/tmp/vlroute-benches/dynamath"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--routers", default="irt,mf")
    parser.add_argument("--sizes", default="25,50,100")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    bench = load_bench(args.bench)
    X, _ = feature_matrix(bench, "minilm", "efficientnet-lite0" if len(bench.images) else None)
    base = bench.matrices()
    bounds = cost_bounds(base.cost)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for k in range(args.seeds):
        m = _seed_matrices(bench, base, k)
        parts = {s: np.flatnonzero(m.splits == s) for s in ("train", "dev", "test")}
        train, dev, test = (m.subset(parts[s]) for s in ("train", "dev", "test"))
        Xtr, Xdev, Xte = (X[parts[s]] for s in ("train", "dev", "test"))
        ctx = ScoringContext((bounds[0] * 1e4, bounds[1] * 1e4), reference_model(train))
        for name in args.routers.split(","):
            full = make_router(name, candidates="all").fit(train, bounds=bounds, X=Xtr)
            scenario = tune_cost_weight(full, dev, Xdev, bounds)
            full_rs = score(full.route(test, scenario, Xte), test, scenario, ctx)["rank_score"]
            for h, held in enumerate(m.models):
                others = [x for x in m.models if x != held]
                reduced = make_router(name, candidates="all").fit(
                    train.select_models(others), bounds=bounds, X=Xtr)
                kept = tune_cost_weight(reduced, dev.select_models(others), Xdev, bounds)
                labelled = np.flatnonzero(np.isfinite(train.quality[:, h]))
                for n in sizes:
                    rng = np.random.default_rng([k, h, n])    # the same samples for each router
                    rows_n = rng.choice(labelled, size=min(n, len(labelled)), replace=False)
                    costs = {d: float(np.nanmean(train.matrix(d)[:, h]))
                             for d in ("usd", "latency", "energy")}
                    added = add_model(reduced, held, Xtr[rows_n], train.quality[rows_n, h],
                                      tier=train.tiers[h], mean_cost=costs)
                    order = [*others, held]
                    part = test.select_models(order)
                    rs = score(added.route(part, kept, Xte), part, kept, ctx)["rank_score"]
                    rows.append({"seed": k, "router": name, "held_out": held, "n": n,
                                 "rank_score_added": rs, "rank_score_full": full_rs,
                                 "difference": full_rs - rs})
            print(f"seed {k} {name}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    summary = []
    print(f"\n{'router':6s} {'n':>4s} {'RS added':>9s} {'RS full':>8s} {'full - added':>13s}")
    for name in args.routers.split(","):
        for n in sizes:
            sel = [r for r in rows if r["router"] == name and r["n"] == n]
            entry = {"router": name, "n": n,
                     "rank_score_added": float(np.mean([r["rank_score_added"] for r in sel])),
                     "rank_score_full": float(np.mean([r["rank_score_full"] for r in sel])),
                     "difference": float(np.mean([r["difference"] for r in sel])),
                     "worst_difference": float(np.max([r["difference"] for r in sel]))}
            summary.append(entry)
            print(f"{name:6s} {n:4d} {entry['rank_score_added']:9.2f} "
                  f"{entry['rank_score_full']:8.2f} {entry['difference']:13.2f}")
    doc = {"bench": str(args.bench), "seeds": args.seeds, "sizes": sizes,
           "models": list(base.models), "summary": summary, "rows": rows,
           "seconds": round(time.perf_counter() - start, 1),
           "command": "python bench/newmodel.py " + " ".join(
               f"--{k} {v}" for k, v in (("seeds", args.seeds), ("routers", args.routers),
                                         ("sizes", args.sizes)))}
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "newmodel.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(args.out / "newmodel.json")


if __name__ == "__main__":
    main()
