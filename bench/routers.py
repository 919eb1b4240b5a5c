"""``auto`` and the learned routers on the shared sets, 5 seeds, both protocols; the edge/cloud
tau curve. Run by hand:

    python bench/routers.py [--shared ../shared/data] [--work /tmp/vlroute-benches] \
        [--seeds 5] [--routers auto,knn,prior,blend,mf,irt,stack,calibrated] \
        [--protocols grouped,random] [--out bench/results] [--keep] [--ray [ADDRESS]]

For each set: build the bench, compute features (MiniLM text; EfficientNet-Lite0 image where the
set has images), evaluate the baselines and the routers with cost_weight chosen on dev
(scenario ``cost_weight@dev``; ``auto`` chooses its family, labels and cost_weight on dev) under
each protocol (``grouped``: a question's variants stay on one side; ``random``:
VL-RouterBench's per-sample splits, leakage included), and, for one edge/cloud pair per image
set, sweep tau of the threshold rule (kNN P(solved), edge model first: ECVL's rule) on dev and
test.
``--tau-only`` recomputes just the tau curves of an existing ``routers.json``; ``--keep`` keeps
the documents of an existing ``routers.json`` that this run does not recompute (e.g. the
random protocol's, when only ``--protocols grouped`` runs). Writes
``routers.json`` (a vlroute-results/2 document per set) and ``routers.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from vlroute._ray import connect
from vlroute.data import READERS, build_bench, load_bench
from vlroute.data.bench import Bench
from vlroute.evaluation import EvalSpec, evaluate_bench, flat_rows
from vlroute.evaluation.executors import RayExecutor
from vlroute.evaluation.results import json_safe, load_result_set
from vlroute.evaluation.tau import tau_curve
from vlroute.features.registry import make_encoder
from vlroute.features.store import compute_features, feature_matrix
from vlroute.routers import BASELINES
from vlroute.scenarios import TUNED, parse_scenario

SETS = {"dynamath": ("Qwen2-VL-7B-Instruct", "Qwen2-VL-72B-Instruct"),
        "mathv": ("internlm-xcomposer2-vl-7b", "qwen-vl-max"),
        "vibe_eval": None, "llmrouter_text": None}


def prepare(name: str, shared: Path, work: Path) -> tuple[Bench, str | None]:
    root = work / name
    if not (root / "manifest.json").is_file():
        build_bench(READERS.get("jsonl")(shared / name, work / f".{name}"), root)
    bench = load_bench(root)
    image = "efficientnet-lite0" if len(bench.images) else None
    have = json.loads((root / "features" / "index.json").read_text()) \
        if (root / "features" / "index.json").is_file() else {}
    todo = [n for n in ("minilm", image) if n and n not in have]
    if todo:
        compute_features(bench, {n: make_encoder(n) for n in todo},
                         cache_dir=work / "cache")
    return bench, image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/vlroute-benches"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--routers", default="auto,knn,prior,blend,mf,irt,stack,calibrated")
    parser.add_argument("--protocols", default="grouped,random")
    parser.add_argument("--keep", action="store_true",
                        help="Keep the sets and protocols of routers.json not run now.")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="Run eval's (seed x router) jobs on Ray: a local instance, or "
                             "the cluster at ADDRESS (the same documents but timings).")
    parser.add_argument("--tau-only", action="store_true",
                        help="Recompute only the tau curves of an existing routers.json.")
    parser.add_argument("--render", action="store_true",
                        help="Only rewrite routers.md from the routers.json in --out.")
    args = parser.parse_args()
    if args.render:
        docs = load_result_set(args.out / "routers.json")
        lines = ["# Routers on the shared sets", ""]
        for key, doc in docs.items():
            lines += table(key, doc)
        (args.out / "routers.md").write_text("\n".join(lines) + "\n"
                                             + _kept(args.out / "routers.md"))
        print(f"wrote {args.out / 'routers.md'}")
        return
    docs, lines = {}, ["# Routers on the shared sets", ""]
    previous = load_result_set(args.out / "routers.json") if args.tau_only else {}
    executor = RayExecutor(args.ray) if args.ray else None
    if executor is not None:                 # one Ray session for every set, not one each
        connect(None if args.ray == "local" else args.ray)
    for name in args.sets.split(","):
        bench, image = prepare(name, args.shared, args.work)
        X, spec = feature_matrix(bench, "minilm", image)
        for protocol in args.protocols.split(","):
            key = name if protocol == "grouped" else f"{name} (random protocol)"
            start = time.perf_counter()
            doc = previous.get(key) or evaluate_bench(bench, EvalSpec(
                routers=(*BASELINES, *args.routers.split(",")),
                scenarios=(parse_scenario(TUNED),), seeds=args.seeds, features=X,
                feature_spec=spec, singles=True, protocol=protocol), executor=executor)
            doc["seconds"] = round(time.perf_counter() - start, 1)
            pair = SETS[name]
            if pair and protocol == "grouped":
                doc["tau_curves"] = [tau_curve(bench, X, pair, seeds=args.seeds)]
            docs[key] = doc
            lines += table(key, doc)
            print("\n".join(lines[-(len(flat_rows(doc)) + 12):]), flush=True)
    if args.keep and (args.out / "routers.json").is_file():
        kept = load_result_set(args.out / "routers.json")
        docs = {k: docs.get(k, kept.get(k)) for k in [*kept, *docs] if k in docs or k in kept}
        lines = ["# Routers on the shared sets", ""]
        for key, doc in docs.items():
            lines += table(key, doc)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routers.json").write_text(json.dumps(json_safe(docs), indent=1) + "\n")
    (args.out / "routers.md").write_text("\n".join(lines) + "\n" + _kept(args.out / "routers.md"))
    print(f"wrote {args.out / 'routers.json'} and routers.md")


#: a hand-written section of routers.md (the end-to-end verdict, from bench/e2e.py's numbers)
#: that a rerun of this script keeps
KEPT = "## End-to-end routers"


def _kept(path: Path) -> str:
    text = path.read_text() if path.is_file() else ""
    return text[text.index(KEPT):] if KEPT in text else ""


def paired(doc: dict[str, Any], router: str = "auto") -> list[str]:
    """``router`` against the best single model by rank, seed by seed on the same test split:
    the mean Rank Score difference, its standard error, the wins; "too small to tell" when
    the mean is within two standard errors of 0."""
    def per_seed(name: str) -> dict[int, float]:
        return {r["seed"]: r["rank_score"] for r in doc["rows"]
                if r["router"] == name and r["split"] == "test" and not r.get("hints")
                and isinstance(r["seed"], int)}

    mine, best = per_seed(router), per_seed("best_single_by_rank")
    seeds = sorted(set(mine) & set(best))
    if len(seeds) < 2:
        return []
    diff = np.array([mine[k] - best[k] for k in seeds])
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    sizes = {s["split_sizes"]["test"] for s in doc["seeds"] if "split_sizes" in s}
    verdict = ("too small to tell apart on this test split" if abs(diff.mean()) <= 2 * se
               else ("ahead" if diff.mean() > 0 else "behind"))
    return [f"\n{router} - best single by rank, paired over {len(seeds)} seeds: "
            f"{diff.mean():+.2f} Rank Score (standard error {se:.2f}; {router} ahead on "
            f"{int((diff > 0).sum())} of {len(seeds)}; test split "
            f"{'/'.join(str(n) for n in sorted(sizes))} requests): {verdict}"]


def table(name: str, doc: dict[str, Any]) -> list[str]:
    out = [f"## {name} (test split, mean ± std over {len(doc['seeds'])} seeds; "
           f"cost estimated; {doc.get('seconds', '?')} s)", "",
           "| router | Avg Acc | Avg Cost ($/10K) | Rank Score | gap closed | ECE |",
           "|---|---|---|---|---|---|"]
    for r in flat_rows(doc):
        gap = "-" if r["gap_closed"] is None else f"{r['gap_closed']:.3f}"
        ece = "-" if r.get("ece") is None else f"{r['ece']:.3f}"
        out.append(f"| {r['router']} | {r['avg_acc']:.3f} ± {r['avg_acc_std']:.3f} | "
                   f"{r['avg_cost_per_10k']:.3f} ± {r['avg_cost_per_10k_std']:.3f} | "
                   f"{r['rank_score']:.2f} ± {r['rank_score_std']:.2f} | {gap} | {ece} |")
    out += paired(doc)
    for seed in doc.get("auto", []):
        params = ", ".join(f"{k}={v}" for k, v in (seed.get("params") or {}).items())
        out.append(f"\nauto, seed {seed['seed']}: {seed['router']}"
                   f"{f' [{params}]' if params else ''} ({seed['labels']} labels, "
                   f"{seed['scenario']}), dev Rank Score {seed['dev']['rank_score']:.2f}")
    for curve in doc.get("tau_curves", []):
        c, t = curve["chosen_on_dev"], curve["test_at_chosen"]
        out += ["", f"Edge/cloud pair {curve['pair'][0]} / {curve['pair'][1]} (MES 6, kNN "
                "P(solved), edge model tried first); tau chosen on dev as the largest edge "
                "share with APSP drop <= 5%:",
                "no tau keeps the dev APSP drop within 5%" if not c else
                f"tau {c['tau']}: test edge share {t['edge_share']:.3f}, "
                f"APSP drop {t['apsp_drop']:.3f}, CA {t['ca']:.3f}, AIL {t['ail']:.2f} s, "
                f"RCS {t['rcs']:.3f}", "",
                "| tau | edge share | APSP drop | CA | AIL (s) | RCS |",
                "|---|---|---|---|---|---|"]
        for p in curve["curve"]["test"][::4]:
            out.append(f"| {p['tau']} | {p['edge_share']:.3f} | {p['apsp_drop']:.3f} | "
                       f"{p['ca']:.3f} | {p['ail']:.2f} | {p['rcs']:.3f} |")
    return [*out, ""]


if __name__ == "__main__":
    main()
