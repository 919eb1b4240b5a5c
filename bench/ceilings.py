"""How far can a router that knows each *question* (not each variant) go? Run by hand:

    python bench/ceilings.py [--work /tmp/vlroute-benches] [--seeds 5] [--out bench/results]

DynaMath has 10 program-generated variants per seed question and the grouped splits keep a
question's variants together, so a router sees test questions it never saw in training. This
script bounds what request-level routing can gain there: the "question oracle" is told, for each
test question, every model's mean quality over that question's variants (labels of the test
split: an upper bound, not a router), and decides with the best linear cost penalty. The Oracle
knows each variant. For the Qwen2-VL-7B / 72B pair it gives the largest edge share within 5% of
always-72B's APSP when requests go to the cloud in order of (known) cloud gain.
Writes ``ceilings.json`` and prints a table. Needs the benches bench/routers.py builds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from vlroute.data import load_bench
from vlroute.data.bench import resplit
from vlroute.data.matrices import RoutingMatrices
from vlroute.metrics import cost_bounds, rank_score

PAIR = ["Qwen2-VL-7B-Instruct", "Qwen2-VL-72B-Instruct"]
PENALTIES = np.r_[0.0, np.geomspace(1e-3, 30, 80)]


def question_means(data: RoutingMatrices) -> np.ndarray:
    groups = data.groups.astype(str)
    out = np.zeros_like(data.quality)
    for g in np.unique(groups):
        rows = groups == g
        out[rows] = np.nanmean(data.quality[rows], axis=0)
    return out


def best_rank_score(pred: np.ndarray, data: RoutingMatrices, bounds: tuple[float, float]
                    ) -> float:
    cost = np.nanmean(data.cost, axis=0)
    idx = np.arange(data.n_samples)
    best = -1.0
    for mu in PENALTIES:
        dec = np.argmax(np.nan_to_num(pred, nan=-1) - mu * cost / bounds[1], axis=1)
        acc = float(np.nanmean(data.quality[idx, dec]))
        avg = float(np.nanmean(data.cost[idx, dec])) * 1e4
        best = max(best, rank_score(acc, avg, c_min=bounds[0] * 1e4,
                                          c_max=bounds[1] * 1e4))
    return best


def max_edge_share(gain: np.ndarray, q: np.ndarray, max_drop: float = 0.05) -> float:
    cloud = q[:, 1].mean()
    order = np.argsort(-gain, kind="stable")
    best = 0.0
    for n in range(len(q) + 1):
        dec = np.zeros(len(q), dtype=int)
        dec[order[:n]] = 1
        if 1 - q[np.arange(len(q)), dec].mean() / cloud <= max_drop:
            best = max(best, 1 - n / len(q))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vlroute-benches"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    bench = load_bench(args.work / "dynamath")
    m_all = bench.matrices()
    bounds = cost_bounds(m_all.cost)
    pair_cols = [m_all.model_index(p) for p in PAIR]
    rows: list[dict[str, Any]] = []
    for k in range(args.seeds):
        m = m_all if k == 0 else m_all.with_splits(resplit(bench, 42 + k))
        test = m.subset(np.flatnonzero(m.splits == "test"))
        qm = question_means(test)
        pq = test.quality[:, pair_cols]
        rows.append({
            "seed": k,
            "question_oracle_rank_score": best_rank_score(qm, test, bounds),
            "oracle_rank_score": best_rank_score(np.nan_to_num(test.quality), test, bounds),
            "pair_question_oracle_edge_share": max_edge_share(
                qm[:, pair_cols[1]] - qm[:, pair_cols[0]], pq),
            "pair_oracle_edge_share": max_edge_share(pq[:, 1] - pq[:, 0], pq)})
    summary = {key: {"mean": float(np.mean([r[key] for r in rows])),
                     "std": float(np.std([r[key] for r in rows]))}
               for key in rows[0] if key != "seed"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceilings.json").write_text(json.dumps(
        {"set": "dynamath", "pair": PAIR, "seeds": rows, "summary": summary}, indent=1) + "\n")
    print("| quantity (DynaMath test, 5 grouped seeds) | mean | std |\n|---|---|---|")
    for key, v in summary.items():
        print(f"| {key} | {v['mean']:.3f} | {v['std']:.3f} |")


if __name__ == "__main__":
    main()
