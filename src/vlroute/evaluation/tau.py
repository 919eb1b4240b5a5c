"""The threshold curve of an edge/cloud pair (ECVL-Router's figure of tau).

For a pair (edge model, cloud model), a quality router's P(solved) at ``mes`` decides with the
edge-first threshold rule at every tau of a grid; each point carries edge share, APSP, its
drop against always-cloud, CA, AIL and RCS, on dev and test, averaged over seeds. The tau with
the largest dev edge share whose dev APSP drop stays within ``max_drop`` is chosen on dev and
reported on test.

By default the router is trained on the pair's outcomes only. With ``fit_on="all"`` it is
trained on every candidate model's outcomes (the same rows) and decides between the pair's two
columns (the others marked unavailable): ECVL-Router's stage 1 on all models, with ``params``
such as ``{"pair": "EDGE,CLOUD"}`` for its stage 2.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlroute._typing import FloatArray
from vlroute.data.bench import Bench, resplit
from vlroute.evaluation.scoring import ScoringContext, score
from vlroute.metrics import cost_bounds
from vlroute.routers import make_router
from vlroute.routers.quality import QualityRouter
from vlroute.scenarios import Scenario

TAUS = tuple(np.round(np.linspace(0.0, 1.0, 41), 3).tolist())
POINT_KEYS = ("tau", "edge_share", "apsp", "apsp_drop", "ca", "ail", "rcs")


def tau_curve(  # noqa: PLR0913 - keyword options of one sweep
        bench: Bench, X: FloatArray, pair: tuple[str, str], *, seeds: int = 1,
        router: str = "knn", mes: float = 6.0, max_drop: float = 0.05,
        taus: tuple[float, ...] = TAUS, fit_on: str = "pair",
        params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The curve of ``pair`` = (edge model, cloud model); see the module docstring."""
    if fit_on not in ("pair", "all"):
        raise ValueError(f"fit_on must be 'pair' or 'all', got {fit_on!r}.")
    m_all = bench.matrices(list(pair))
    wide = bench.matrices(sorted(set(bench.candidate_models()) | set(pair),
                                 key=list(bench.models["model"]).index)) \
        if fit_on == "all" else m_all
    columns = [list(wide.models).index(name) for name in pair]
    available = np.isin(np.arange(len(wide.models)), columns)
    bounds = cost_bounds(m_all.cost)
    ctx = ScoringContext((bounds[0] * 1e4, bounds[1] * 1e4), 1)
    base_seed = int(bench.manifest.get("split", {}).get("seed", 42))
    per_seed = []
    for k in range(seeds):
        splits = None if k == 0 else resplit(bench, base_seed + k)
        m = m_all if splits is None else m_all.with_splits(splits)
        fit = wide if splits is None else wide.with_splits(splits)
        estimator = make_router(router, **{"candidates": "all", **(params or {})})
        if not isinstance(estimator, QualityRouter):
            raise ValueError(f"the tau curve needs a quality router (P(solved)); {router!r} "
                             "is not one.")
        estimator.fit(fit.split("train"), bounds=bounds, X=X[fit.splits == "train"])
        seed_rows = {}
        for split in ("dev", "test"):
            data, Xs = m.split(split), X[m.splits == split]
            cloud = score(np.ones(data.n_samples, dtype=np.int64), data,
                          Scenario(tau=1.0, by="usd", mes=mes), ctx)
            preds = estimator.predict_solved(Xs, mes)
            points = []
            for tau in taus:
                scenario = Scenario("pair", tau=tau, mes=mes, by="usd", edge_first=True)
                picked = estimator.decide(preds, scenario, available=available)
                values = score((picked == columns[1]).astype(np.int64), data, scenario, ctx)
                values["apsp_drop"] = (1.0 - values["apsp"] / cloud["apsp"]
                                       if cloud["apsp"] else None)
                points.append({"tau": tau, **values})
            seed_rows[split] = points
        per_seed.append(seed_rows)
    mean = {split: [{key: _mean([s[split][i][key] for s in per_seed]) for key in POINT_KEYS}
                    for i in range(len(taus))] for split in ("dev", "test")}
    ok = [p for p in mean["dev"] if p["apsp_drop"] is not None and p["apsp_drop"] <= max_drop]
    chosen = max(ok, key=lambda p: p["edge_share"] or 0.0) if ok else None
    test_at = next((p for p in mean["test"] if chosen and p["tau"] == chosen["tau"]), None)
    return {"pair": list(pair), "mes": mes, "router": router, "seeds": seeds,
            "max_apsp_drop": max_drop, "curve": mean, "chosen_on_dev": chosen,
            "test_at_chosen": test_at}


def _mean(values: list[Any]) -> float | None:
    arr = np.array([np.nan if v is None else v for v in values], dtype=float)
    return float(arr.mean()) if np.isfinite(arr).all() else None
