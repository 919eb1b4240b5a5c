"""Evaluate routers on a bench under scenarios and seeds; build the results document."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlroute.data.bench import Bench, resplit
from vlroute.data.matrices import RoutingMatrices
from vlroute.evaluation.results import aggregate, bench_section, breakdown_rows, new_document
from vlroute.evaluation.scoring import ScoringContext, clean, reference_model, score
from vlroute.metrics import cost_bounds, gap_closed, pareto_area, pareto_frontier
from vlroute.routers import BASELINES, BaseRouter, make_router
from vlroute.scenarios import PRESETS, Scenario

Progress = Callable[[str], None]


@dataclass(frozen=True)
class EvalSpec:
    """What to evaluate: router names, scenarios, seeds, splits and candidate models."""

    routers: tuple[str, ...] = BASELINES
    scenarios: tuple[Scenario, ...] = (PRESETS["quality"],)
    seeds: int = 1
    splits: tuple[str, ...] = ("test",)
    singles: bool = True
    models: tuple[str, ...] | None = None
    all_models: bool = False
    breakdown: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _seed_matrices(bench: Bench, base: RoutingMatrices, k: int) -> RoutingMatrices:
    if k == 0:
        return base
    seed = int(bench.manifest.get("split", {}).get("seed", 42)) + k
    return base.with_splits(resplit(bench, seed))


def _fit(names: list[str], train: RoutingMatrices, bounds: tuple[float, float]
         ) -> dict[str, BaseRouter]:
    return {name: make_router(name).fit(train, bounds=bounds) for name in names}


def _timed_route(router: BaseRouter, data: RoutingMatrices, scenario: Scenario
                 ) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    decisions = router.route(data, scenario)
    return decisions, time.perf_counter() - start


def evaluate_bench(bench: Bench, spec: EvalSpec = EvalSpec(),
                   progress: Progress | None = None) -> dict[str, Any]:
    """Fit every router on each seed's train split and score it on ``spec.splits``.

    Returns a ``vlroute-results/1`` document (see :mod:`vlroute.evaluation.results`).
    """
    note = progress or (lambda _msg: None)
    m = bench.matrices(list(spec.models) if spec.models else None, all_models=spec.all_models)
    bounds = cost_bounds(m.cost)
    bounds_10k = (bounds[0] * 1e4, bounds[1] * 1e4)
    singles = [f"single:{model}" for model in m.models] if spec.singles else []
    names = list(dict.fromkeys([*spec.routers, "oracle", "best_single_by_rank", *singles]))
    rows: list[dict[str, Any]] = []
    times: dict[str, list[float]] = {}
    doc = new_document(bench, spec, m, bounds_10k)
    for k in range(spec.seeds):
        note(f"seed {k + 1}/{spec.seeds}")
        mk = _seed_matrices(bench, m, k)
        train = mk.split("train")
        ctx = ScoringContext(bounds_10k, reference_model(train))
        routers = _fit(names, train, bounds)
        for scenario in spec.scenarios:
            for split in spec.splits:
                data = mk.split(split)
                scored = {}
                for name, router in routers.items():
                    decisions, seconds = _timed_route(router, data, scenario)
                    times.setdefault(name, []).append(seconds / max(data.n_samples, 1))
                    scored[name] = score(decisions, data, scenario, ctx)
                    if k == 0 and split == "test" and spec.breakdown and name in spec.routers:
                        doc["breakdown"].extend(breakdown_rows(name, scenario, decisions, data))
                ref_rs, orc_rs = (scored["best_single_by_rank"]["rank_score"],
                                  scored["oracle"]["rank_score"])
                for name, values in scored.items():
                    values["gap_closed"] = gap_closed(values["rank_score"], ref_rs, orc_rs)
                    rows.append({"router": name, "scenario": scenario.name, "split": split,
                                 "seed": k, **values})
        doc["seeds"].append({"seed": k, "reference_model": m.models[ctx.reference],
                             "best_single_by_rank":
                                 m.models[routers["best_single_by_rank"].choice_],  # type: ignore[attr-defined]
                             "split_sizes": {s: int((mk.splits == s).sum())
                                             for s in ("train", "dev", "test")}})
    _finish(doc, rows, times, spec, m, bounds_10k)
    return doc


def _finish(doc: dict[str, Any], rows: list[dict[str, Any]], times: dict[str, list[float]],
            spec: EvalSpec, m: RoutingMatrices, bounds_10k: tuple[float, float]) -> None:
    per_seed = [r for r in rows if not r["router"].startswith("single:")]
    single_rows = [r for r in rows if r["router"].startswith("single:")]
    doc["rows"] = [{k: clean(v) for k, v in r.items()} for r in per_seed + aggregate(per_seed)]
    singles = aggregate(single_rows)
    for r in singles:
        model = r.pop("router").removeprefix("single:")
        r.update(model=model, tier=m.tiers[m.model_index(model)])
    for scenario in spec.scenarios:
        for split in spec.splits:
            group = [r for r in singles if r["scenario"] == scenario.name and r["split"] == split]
            front = pareto_frontier([r["avg_cost_per_10k"] for r in group],
                                    [r["avg_acc"] for r in group])
            for i, r in enumerate(group):
                r["pareto"] = bool(i in set(front.tolist()))
            doc["pareto"].append({
                "scenario": scenario.name, "split": split,
                "models": [group[i]["model"] for i in front],
                "area": pareto_area([r["avg_cost_per_10k"] for r in group],
                                    [r["avg_acc"] for r in group],
                                    c_min=bounds_10k[0], c_max=bounds_10k[1])})
    doc["singles"] = [{k: clean(v) for k, v in r.items()} for r in singles]
    doc["timings"] = [
        {"router": name, "with_encoders": False, "batch": "split",
         "ms_per_request_p50": clean(float(np.median(v)) * 1e3),
         "ms_per_request_p99": clean(float(np.percentile(v, 99)) * 1e3),
         "requests_per_s": clean(1.0 / float(np.median(v))) if np.median(v) > 0 else None}
        for name, v in times.items() if name in spec.routers]
    doc["bench"] = {**doc["bench"], **bench_section_extra(m)}


def bench_section_extra(m: RoutingMatrices) -> dict[str, Any]:
    """Counts of the matrices the evaluation used."""
    return {"n_samples": m.n_samples, "n_models": m.n_models}


__all__ = ["EvalSpec", "bench_section", "evaluate_bench"]
