"""How much can routing gain on the shared sets, and how much of it does a request carry?
Run by hand:

    python bench/ceilings.py [--work /tmp/vlroute-benches] [--sets dynamath,mathv,...] \
        [--seeds 5] [--out bench/results]

Per set, on the grouped splits ``vlroute eval`` uses (the bench's seed, then 43, 44, ...) and
its Rank Score bounds, test split:

- the best single model by rank (chosen on train): eval's reference for gap closed;
- the Oracle (each request's best model) and the "question oracle", told for each test
  question every model's mean quality over that question's variants (DynaMath has 10
  program-generated variants per question, and the grouped splits keep them together, so
  every test question is new; on sets without variants the two are the same). Both decide
  with the best linear cost penalty; they are upper bounds, not routers. For a set's edge /
  cloud pair: the largest edge share within 5% of always-cloud's APSP when requests go to
  the cloud in order of (known) cloud gain;
- content bounds: how much of that a request's *content* carries. Per feature set, a ridge
  regression (alpha 30, not tuned) from the request's features to each model's mean quality
  over its training question, fitted on train and read on test with the same best cost
  penalty and pair ordering. The penalty is chosen on test, so these bound a linear decision
  on those features from above; they are not routers. "train means" (no features) is the
  best single model under the same optimism. Feature sets: the stored MiniLM and
  EfficientNet-Lite0 features, TF-IDF of the question's words and characters, and the stored
  ``ocr`` feature (text read from the image, embedded by MiniLM) when the bench has it
  (``vlroute features DIR --text none --image none --extra ocr``, about an hour for DynaMath
  on 2 cores).

Writes ``ceilings.json`` and ``ceilings.md`` and prints the tables. Needs the benches
bench/routers.py builds.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from vlroute.data import load_bench
from vlroute.data.bench import Bench, resplit
from vlroute.data.matrices import RoutingMatrices
from vlroute.metrics import cost_bounds, rank_score

#: the sets and their edge / cloud pair (as bench/routers.py evaluates them)
SETS: dict[str, tuple[str, str] | None] = {
    "dynamath": ("Qwen2-VL-7B-Instruct", "Qwen2-VL-72B-Instruct"),
    "mathv": ("internlm-xcomposer2-vl-7b", "qwen-vl-max"),
    "vibe_eval": None, "llmrouter_text": None}
PENALTIES = np.r_[0.0, np.geomspace(1e-3, 30, 80)]
#: ridge strength of the content bounds (fixed, not tuned)
ALPHA = 30.0


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


def train_group_means(data: RoutingMatrices, train: np.ndarray) -> np.ndarray:
    """Each train row's mean quality per model over its question's train rows (NaN -> 0)."""
    return np.nan_to_num(data.subset(train).group_means().quality, nan=0.0)


def feature_sets(bench: Bench, data: RoutingMatrices) -> dict[str, Any]:
    """name -> features, or a function of the train rows giving them (TF-IDF is fitted on
    the train split's questions)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    from vlroute.features.store import feature_matrix, load_feature_arrays

    index = json.loads((bench.root / "features" / "index.json").read_text())
    stored = {name: normalize(load_feature_arrays(bench, [name])[name]) for name in
              ("minilm", "efficientnet-lite0", "ocr") if name in index}
    text = bench.samples.set_index("sample_id").loc[list(data.sample_ids), "question"]
    questions = text.astype(str).tolist()

    def tfidf(**kw: Any) -> Any:
        def fit(train: np.ndarray) -> Any:
            vec = TfidfVectorizer(sublinear_tf=True, **kw)
            vec.fit([questions[i] for i in train])
            return vec.transform(questions)
        return fit

    sets: dict[str, Any] = {"train means": np.ones((data.n_samples, 1)), **stored}
    if {"minilm", "efficientnet-lite0"} <= set(stored):
        sets["minilm + efficientnet-lite0"] = feature_matrix(bench, "minilm",
                                                             "efficientnet-lite0")[0]
    sets["tf-idf words"] = tfidf(ngram_range=(1, 2), min_df=2)
    sets["tf-idf characters"] = tfidf(analyzer="char_wb", ngram_range=(2, 5), min_df=3)
    if {"minilm", "ocr"} <= set(stored):
        sets["minilm + ocr"] = feature_matrix(bench, "minilm", "ocr")[0]
    return sets


def content_bounds(bench: Bench, data: RoutingMatrices, train: np.ndarray, test: np.ndarray,
                   bounds: tuple[float, float], pair_cols: list[int] | None,
                   sets: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per feature set: the best-penalty Rank Score and the pair's edge share of a ridge
    fitted to train question means, read on ``test``."""
    from sklearn.linear_model import Ridge

    target = train_group_means(data, train)
    sub = data.subset(test)
    out: dict[str, dict[str, float | None]] = {}
    for name, features in sets.items():
        X = features(train) if callable(features) else features
        pred = Ridge(alpha=ALPHA).fit(X[train], target).predict(X[test])
        share = None
        if pair_cols:
            pq = sub.quality[:, pair_cols]
            gain = pred[:, pair_cols[1]] - pred[:, pair_cols[0]]
            if np.ptp(gain) < 1e-12:    # no order among requests: all on the edge or none
                share = float(1 - pq[:, 0].mean() / pq[:, 1].mean() <= 0.05)
            else:
                share = max_edge_share(gain, pq)
        out[name] = {"rank_score": best_rank_score(pred, sub, bounds),
                     "pair_edge_share": share}
    return out


def best_single(data: RoutingMatrices, train: np.ndarray, test: np.ndarray,
                bounds: tuple[float, float]) -> float:
    """Test Rank Score of the model with the best train Rank Score (eval's reference)."""
    def score(rows: np.ndarray, k: int) -> float:
        return rank_score(float(np.nanmean(data.quality[rows, k])),
                          float(np.nanmean(data.cost[rows, k])) * 1e4,
                          c_min=bounds[0] * 1e4, c_max=bounds[1] * 1e4)
    k = max(range(data.n_models), key=lambda j: score(train, j))
    return score(test, k)


def one_set(bench: Bench, pair: tuple[str, str] | None, seeds: int) -> dict[str, Any]:
    """The oracles, the best single model and the content bounds of one set."""
    m_all = bench.matrices()
    bounds = cost_bounds(m_all.cost)
    pair_cols = [m_all.model_index(p) for p in pair] if pair else None
    sets = feature_sets(bench, m_all)
    rows: list[dict[str, Any]] = []
    content: list[dict[str, dict[str, float]]] = []
    for k in range(seeds):
        m = m_all if k == 0 else m_all.with_splits(resplit(bench, 42 + k))
        train, test_rows = np.flatnonzero(m.splits == "train"), np.flatnonzero(m.splits == "test")
        content.append(content_bounds(bench, m, train, test_rows, bounds, pair_cols, sets))
        test = m.subset(test_rows)
        qm = question_means(test)
        row = {"seed": k, "best_single_by_rank_rank_score": best_single(m, train, test_rows,
                                                                         bounds),
               "question_oracle_rank_score": best_rank_score(qm, test, bounds),
               "oracle_rank_score": best_rank_score(np.nan_to_num(test.quality), test, bounds)}
        if pair_cols:
            pq = test.quality[:, pair_cols]
            row["pair_question_oracle_edge_share"] = max_edge_share(
                qm[:, pair_cols[1]] - qm[:, pair_cols[0]], pq)
            row["pair_oracle_edge_share"] = max_edge_share(pq[:, 1] - pq[:, 0], pq)
        rows.append(row)

    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    summary = {key: stats([r[key] for r in rows]) for key in rows[0] if key != "seed"}
    by_set = {name: {key: stats([c[name][key] for c in content])
                     for key in content[0][name] if content[0][name][key] is not None}
              for name in sets}
    return {"pair": list(pair) if pair else None, "seeds": rows, "summary": summary,
            "content": {"alpha": ALPHA, "by_seed": content, "summary": by_set}}


def table(name: str, doc: dict[str, Any]) -> list[str]:
    """The markdown of one set: the oracles, then the content bounds."""
    summary, by_set = doc["summary"], doc["content"]["summary"]
    single = summary["best_single_by_rank_rank_score"]["mean"]
    oracle = summary["oracle_rank_score"]["mean"]
    out = [f"## {name} (test split, {len(doc['seeds'])} grouped seeds)", "",
           "| quantity | mean | std |", "|---|---|---|"]
    out += [f"| {key} | {v['mean']:.3f} | {v['std']:.3f} |" for key, v in summary.items()]
    out += ["", "| content bound: ridge on | Rank Score (best penalty on test) | as gap closed "
            "against the best single model by rank | pair edge share within 5% APSP drop |",
            "|---|---|---|---|"]
    for feats, v in by_set.items():
        score = v["rank_score"]["mean"]
        share = v.get("pair_edge_share")
        out.append(f"| {feats} | {score:.2f} ± {v['rank_score']['std']:.2f} | "
                   f"{(score - single) / (oracle - single):.3f} | "
                   f"{'-' if share is None else format(share['mean'], '.3f')} |")
    return [*out, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vlroute-benches"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    docs = {name: one_set(load_bench(args.work / name), SETS[name], args.seeds)
            for name in args.sets.split(",")}
    lines = ["# How much routing can gain: oracles and content bounds", "",
             "Written by `python bench/ceilings.py`; see its docstring for what each row is.",
             ""]
    for name, doc in docs.items():
        lines += table(name, doc)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceilings.json").write_text(json.dumps(docs, indent=1) + "\n")
    (args.out / "ceilings.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
