"""End-to-end and ECVL routers beside the feature-level ones, on the token caches. Run by hand:

    python bench/e2e.py [--work /tmp/vlroute-benches] [--sets dynamath,mathv] [--seeds 2] \
        [--routers vlc,zooter,routerdc,cosinecls,vlc_q,zooter_q,routerdc_q,ecvl] \
        [--compare knn,mlp,gbdt,mf] [--out bench/results] [--ray [ADDRESS]]

Needs the benches of ``bench/routers.py`` (pooled features) and their token caches
(``vlroute features DIR --tokens``). For each set and router, ``evaluate_bench`` under
``cost_weight@dev`` (grouped splits, choices on dev: cost_weight, and label_lambda in
{0, 100, inf} for the policy routers) on ``--seeds`` seeds, timed per router (training,
the dev search and scoring, per seed). Then, for the quality-mode ones, routing latency on
test requests at batch 1 and 32 with the encoders inside the timed region (question text
and image through the token towers), fitted with one epoch (latency does not depend on the
weights). And the ECVL tau curve on the edge/cloud pair at MES 6 against MLP, GBDT and MF:
edge share at <= 5% APSP drop, tau chosen on dev. Writes ``e2e.json`` and ``e2e.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from routers import SETS

from vlroute._ray import connect
from vlroute.data import load_bench
from vlroute.evaluation import EvalSpec, evaluate_bench, flat_rows
from vlroute.evaluation.executors import RayExecutor
from vlroute.evaluation.results import json_safe
from vlroute.evaluation.tau import tau_curve
from vlroute.evaluation.throughput import TimingPlan, measure
from vlroute.features.store import bench_items, feature_matrix
from vlroute.features.tokens import load_tokens, make_token_encoder
from vlroute.metrics import cost_bounds
from vlroute.routers import BASELINES, E2E_POLICY, make_router
from vlroute.scenarios import PRESETS, TUNED, parse_scenario


def evaluate(bench: Any, X: np.ndarray, spec: dict[str, Any], tokens: Any, routers: list[str],
             seeds: int, params: dict[str, dict[str, Any]], executor: Any = None
             ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for k, name in enumerate(routers):
        start = time.perf_counter()
        doc = evaluate_bench(bench, EvalSpec(
            routers=(*BASELINES, name) if k == 0 else (name,),
            scenarios=(parse_scenario(TUNED),), seeds=seeds, features=X, feature_spec=spec,
            tokens=tokens, singles=k == 0, params=params), executor=executor)
        seconds[name] = (time.perf_counter() - start) / seeds
        rows += [r for r in flat_rows(doc) if k == 0 or r["router"].startswith(name)]
        print(f"{name}: {seconds[name]:.1f} s per seed", flush=True)
    return rows, seconds


def latency(bench: Any, tokens: Any, names: list[str]) -> list[dict[str, Any]]:
    m = bench.matrices()
    items = bench_items(bench)
    test = np.flatnonzero(m.splits == "test")
    encoder = make_token_encoder("minilm", "efficientnet-lite0" if len(bench.images) else None)

    def featurize(rows: np.ndarray) -> Any:
        return encoder.encode_batch([items[i] for i in test[rows]])

    out = []
    for name in names:
        router = make_router(name, max_epochs=1)
        router.fit(m.split("train"), bounds=cost_bounds(m.cost), X=tokens[m.splits == "train"])
        for r in measure(router, m.split("test"), PRESETS["quality"],
                         X=tokens[m.splits == "test"], featurize=featurize,
                         plan=TimingPlan(batches=(1, 32), warmup=2, runs=10)):
            out.append({"router": name, **r})
            print(f"{name} encoders={r['with_encoders']} batch={r['batch']}: p50 "
                  f"{r['ms_p50']:.1f} ms, {r['requests_per_s']:.1f} req/s", flush=True)
    return out


def edge_share(curve: dict[str, Any]) -> dict[str, Any]:
    """The tau chosen on dev (largest edge share within the APSP drop) and its test point."""
    return {"chosen_on_dev": curve["chosen_on_dev"], "test_at_chosen": curve["test_at_chosen"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vlroute-benches"))
    parser.add_argument("--sets", default="dynamath,mathv")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--routers",
                        default="vlc,zooter,routerdc,cosinecls,vlc_q,zooter_q,routerdc_q,ecvl")
    parser.add_argument("--compare", default="knn,mlp,gbdt,mf")
    parser.add_argument("--latency", default="vlc_q,ecvl")
    parser.add_argument("--tau", default="ecvl,mlp,gbdt,mf")
    parser.add_argument("--label-lambda", type=float, default=None,
                        help="one label_lambda for the policy routers instead of the dev "
                             "search over {0, 100, inf} (a third of the trainings)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="Run each router's seeds as Ray tasks (a local instance, or the "
                             "cluster at ADDRESS): the seconds per seed are then wall time "
                             "over seeds run side by side.")
    parser.add_argument("--merge", type=Path, nargs="+", help="merge these e2e.json files "
                        "into --out (no runs)")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    if args.ray:                             # one Ray session for every router and set
        connect(None if args.ray == "local" else args.ray)
    params = {} if args.label_lambda is None else {
        name: {"label_lambda": args.label_lambda} for name in E2E_POLICY}
    docs = {}
    for name in args.sets.split(","):
        bench = load_bench(args.work / name)
        image = "efficientnet-lite0" if len(bench.images) else None
        X, spec = feature_matrix(bench, "minilm", image)
        tokens, token_spec = load_tokens(bench)
        spec = {**spec, "tokens": token_spec}
        routers = [*args.compare.split(","), *args.routers.split(",")]
        rows, seconds = evaluate(bench, X, spec, tokens, routers, args.seeds, params,
                                 RayExecutor(args.ray) if args.ray else None)
        doc: dict[str, Any] = {"set": name, "seeds": args.seeds, "scenario": TUNED,
                               "label_lambda": args.label_lambda or "chosen on dev",
                               "rows": rows, "seconds_per_seed": seconds}
        doc["latency"] = latency(bench, tokens, [r for r in args.latency.split(",") if r])
        curves = []
        for router in [r for r in args.tau.split(",") if r]:
            Xr = tokens if router in args.routers.split(",") else X
            # ECVL: stage 1 on every model's outcomes, stage 2 on the pair
            ecvl = {"fit_on": "all", "params": {"pair": ",".join(SETS[name])}} \
                if router == "ecvl" else {}
            start = time.perf_counter()
            curve = tau_curve(bench, Xr, SETS[name], seeds=args.seeds, router=router, **ecvl)
            curves.append({"router": router, "seconds": time.perf_counter() - start,
                           **curve})
            print(f"tau {router}: {json.dumps(edge_share(curve), default=str)[:300]}",
                  flush=True)
        doc["tau_curves"] = curves
        docs[name] = doc
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "e2e.json").write_text(json.dumps(json_safe(docs), indent=1) + "\n")
        (args.out / "e2e.md").write_text(markdown(docs))
        figure(doc, args.out / f"e2e-tau-{name}.svg")
    print(f"wrote {args.out / 'e2e.json'}, e2e.md and the tau figures")


def figure(doc: dict[str, Any], path: Path) -> None:
    """ECVL-Router's Figure 2 analogue: test edge share against test APSP drop along tau,
    one line per router, the point chosen on dev marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for c in doc.get("tau_curves", []):
        pts = [p for p in c["curve"]["test"] if p["apsp_drop"] is not None]
        line, = ax.plot([p["apsp_drop"] * 100 for p in pts], [p["edge_share"] for p in pts],
                        label=c["router"], lw=1.5)
        t = c["test_at_chosen"]
        if t is not None:
            ax.plot([t["apsp_drop"] * 100], [t["edge_share"]], "o", color=line.get_color())
    ax.axvline(5, color="#555555", ls=":", lw=1)
    pair = doc["tau_curves"][0]["pair"] if doc.get("tau_curves") else ["?", "?"]
    ax.set_xlabel("APSP drop against always-cloud (%, test)")
    ax.set_ylabel("share of requests on the edge (test)")
    ax.set_title(f"{pair[0]} / {pair[1]}, MES 6 (dots: tau chosen on dev)", fontsize=9)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def merge(paths: list[Path], out: Path) -> None:
    """``python bench/e2e.py --merge A/e2e.json B/e2e.json``: one e2e.json, e2e.md and the
    figures from runs made per set (in parallel, one per core)."""
    docs: dict[str, Any] = {}
    for path in paths:
        docs.update(json.loads(path.read_text()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.json").write_text(json.dumps(docs, indent=1) + "\n")
    (out / "e2e.md").write_text(markdown(docs))
    for name, doc in docs.items():
        figure(doc, out / f"e2e-tau-{name}.svg")


def markdown(docs: dict[str, Any]) -> str:
    """Tables of ``e2e.json``: rows, latency and the tau curves' chosen points."""
    out = ["# End-to-end and ECVL routers beside feature-level ones", "",
           "Written by `python bench/e2e.py`; test split, grouped seeds, cost_weight chosen "
           "on dev (the policy routers' label_lambda too, unless a set's heading gives "
           "it); costs estimated. Tau figures: `e2e-tau-SET.svg`.", ""]
    for name, doc in docs.items():
        out += [f"## {name} ({doc['seeds']} seeds, {doc['scenario']}, policy label_lambda "
                f"{doc.get('label_lambda', 'chosen on dev')})", "",
                "| router | Avg Acc | Avg Cost ($/10K) | Rank Score | gap closed | ECE "
                "| s per seed |", "|---|---|---|---|---|---|---|"]
        for r in doc["rows"]:
            if r["router"] not in ("oracle", "best_single_by_rank") \
                    and r["router"] not in doc["seconds_per_seed"]:
                continue
            gap = "-" if r["gap_closed"] is None else f"{r['gap_closed']:.3f}"
            ece = "-" if r.get("ece") is None else f"{r['ece']:.3f}"
            sec = doc["seconds_per_seed"].get(r["router"])
            out.append(f"| {r['router']} | {r['avg_acc']:.3f} ± {r['avg_acc_std']:.3f} | "
                       f"{r['avg_cost_per_10k']:.3f} | {r['rank_score']:.2f} ± "
                       f"{r['rank_score_std']:.2f} | {gap} | {ece} | "
                       f"{'-' if sec is None else f'{sec:.0f}'} |")
        if doc.get("latency"):
            out += ["", "Routing latency per request on this machine (test requests; with "
                    "encoders: question text and image through the token towers):", "",
                    "| router | encoders | batch | p50 ms | p99 ms | requests/s |",
                    "|---|---|---|---|---|---|"]
            out += [f"| {r['router']} | {'yes' if r['with_encoders'] else 'no'} | "
                    f"{r['batch']} | {r['ms_p50']:.1f} | {r['ms_p99']:.1f} | "
                    f"{r['requests_per_s']:.1f} |" for r in doc["latency"]]
        if doc.get("tau_curves"):
            pair = doc["tau_curves"][0]["pair"]
            out += ["", f"Edge/cloud pair {pair[0]} / {pair[1]} at MES 6, edge model tried "
                    "first; tau chosen on dev as the largest edge share with APSP drop <= 5%, "
                    "read on test:", "",
                    "| router | trained on | tau | test edge share | test APSP drop | CA | "
                    "s |", "|---|---|---|---|---|---|---|"]
            for c in doc["tau_curves"]:
                t = c["test_at_chosen"]
                where = "all models, then the pair" if c["router"] == "ecvl" else "the pair"
                out.append(f"| {c['router']} | {where} | " + (
                    "no tau within 5% on dev | - | - | - " if t is None else
                    f"{t['tau']} | {t['edge_share']:.3f} | {t['apsp_drop']:.3f} | "
                    f"{t['ca']:.3f} ") + f"| {c['seconds']:.0f} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
