"""Evaluate routers on a bench under scenarios and seeds; build the results document."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlroute._typing import FloatArray
from vlroute.data.bench import Bench, resplit
from vlroute.data.matrices import RoutingMatrices
from vlroute.errors import ScenarioError, ScenarioMismatchError
from vlroute.evaluation.auto import AutoChoice, labelled, select_auto
from vlroute.evaluation.calibrate import Target, calibrate
from vlroute.evaluation.executors import Executor, LocalExecutor
from vlroute.evaluation.results import aggregate, bench_section, breakdown_rows, new_document
from vlroute.evaluation.scoring import ScoringContext, clean, reference_model, score
from vlroute.metrics import (
    cost_bounds,
    expected_calibration_error,
    gap_closed,
    pareto_area,
    pareto_frontier,
)
from vlroute.routers import BASELINES, BaseRouter, make_router
from vlroute.routers.baselines import BestSingleByRankRouter
from vlroute.routers.labels import LABEL_LAMBDAS
from vlroute.routers.policy import PolicyRouter
from vlroute.routers.quality import QualityRouter
from vlroute.scenarios import PRESETS, TUNED, Scenario

#: the router name of the dev-selected router (see :mod:`vlroute.evaluation.auto`)
AUTO = "auto"

Progress = Callable[[str], None]
COST_WEIGHTS = (0.0, *np.round(np.geomspace(1e-3, 3.0, 48), 6).tolist())


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
    #: request features (n_samples, n_features) row-aligned with the bench, for learned routers
    features: FloatArray | None = None
    feature_spec: dict[str, Any] = field(default_factory=dict)
    #: token features (:class:`vlroute.tokens.Tokens`, row-aligned with the bench) for the
    #: end-to-end routers, which read them in place of ``features``
    tokens: Any = None
    #: constructor parameters per router name
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: cost_weight grid searched on dev for the ``cost_weight@dev`` scenario
    cost_weights: tuple[float, ...] = COST_WEIGHTS
    #: label_lambda grid searched on dev for policy routers in that scenario (each value is
    #: a retraining; a label_lambda given in ``params`` is used as is)
    label_lambdas: tuple[float, ...] = LABEL_LAMBDAS
    #: what learned routers train on: "sample" labels or each training group's "group_mean"
    #: (baselines always see the samples; ``auto`` tries both)
    labels: str = "sample"
    #: "grouped" splits (groups kept together) or VL-RouterBench's per-sample "random" ones
    protocol: str = "grouped"
    #: request hints given to the routers that read them, reported as extra rows
    #: ("ROUTER+task"): the bench's task column as the ``x-vlroute-task`` a client would send
    hints: tuple[str, ...] = ()
    #: calibrate each quality router's scenario knob on dev to this target (the syntax of
    #: ``train --target``: ``apsp_drop<=0.05``, ``edge_share>=0.8``, ``cost_per_request<=X``)
    target: str | None = None


def _seed_matrices(bench: Bench, base: RoutingMatrices, k: int,
                   protocol: str = "grouped") -> RoutingMatrices:
    if k == 0 and protocol == "grouped":
        return base
    seed = int(bench.manifest.get("split", {}).get("seed", 42)) + k
    return base.with_splits(resplit(bench, seed, protocol))


def _rows_of(m: RoutingMatrices, split: str) -> np.ndarray:
    return np.flatnonzero(m.splits == split)


@dataclass(frozen=True)
class _Split:
    """One split's matrices and features."""

    data: RoutingMatrices
    X: FloatArray | None
    T: Any = None

    @classmethod
    def of(cls, m: RoutingMatrices, name: str, X: FloatArray | None, T: Any = None
           ) -> _Split:
        rows = _rows_of(m, name)
        return cls(m.subset(rows), None if X is None else X[rows],
                   None if T is None else T[rows])


def _x(router: BaseRouter, part: _Split) -> Any:
    """What ``router`` reads of a split: token features (end-to-end routers), the feature
    matrix (other learned routers) or nothing (baselines)."""
    if getattr(router, "needs_tokens", False):
        return part.T
    return part.X if router.needs_features else None


def _fit(names: list[str], train: _Split, bounds: tuple[float, float], spec: EvalSpec
         ) -> dict[str, BaseRouter]:
    routers = {}
    for name in names:
        router = make_router(name, **spec.params.get(name, {}))
        data = labelled(train.data, spec.labels) if router.needs_features else train.data
        routers[name] = router.fit(data, bounds=bounds,
                                   X=_x(router, train))
    return routers


def _timed_route(router: BaseRouter, part: _Split, scenario: Scenario
                 ) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    decisions = router.route(part.data, scenario, _x(router, part))
    return decisions, time.perf_counter() - start


def tune_cost_weight(router: QualityRouter, dev: RoutingMatrices, X_dev: FloatArray,
                     bounds: tuple[float, float],
                     cost_weights: tuple[float, ...] = COST_WEIGHTS) -> Scenario:
    """The utility scenario whose cost_weight gives ``router`` the best Rank Score on ``dev``
    (bounds in USD per request, as fitted)."""
    part = _Split(dev, X_dev, X_dev)       # a feature matrix, or tokens (end-to-end)
    ctx = ScoringContext((bounds[0] * 1e4, bounds[1] * 1e4),
                         reference_model(dev))
    return _tune(router, part, ctx, EvalSpec(cost_weights=cost_weights))[0]


def _tune(router: BaseRouter, dev: _Split, ctx: ScoringContext, spec: EvalSpec
          ) -> tuple[Scenario, list[dict[str, Any]]]:
    """The utility scenario whose cost_weight and cost axis (log or linear) maximise Rank
    Score on dev, and the sweep."""
    points: list[dict[str, Any]] = []
    assert isinstance(router, QualityRouter) and _x(router, dev) is not None
    if dev.data.n_samples == 0:  # nothing to tune on: accuracy only
        return Scenario(TUNED, cost_weight=0.0), points
    preds = router.predictions_for(_x(router, dev), Scenario(TUNED, cost_weight=0.0))
    for axis in ("log", "linear"):
        for weight in spec.cost_weights:
            scenario = Scenario(TUNED, cost_weight=weight, cost_axis=axis)
            values = score(router.decide(preds, scenario), dev.data, scenario, ctx)
            points.append({"cost_weight": weight, "cost_axis": axis, **values})
    best = max(points, key=lambda p: (np.nan_to_num(p["rank_score"], nan=-1.0),
                                      -p["cost_weight"], p["cost_axis"] == "log"))
    return Scenario(TUNED, cost_weight=best["cost_weight"],
                    cost_axis=best["cost_axis"]), points


def lambda_label(value: float) -> float | str:
    """label_lambda as JSON can hold it (inf becomes "inf")."""
    return "inf" if math.isinf(value) else value


def _tune_policy(name: str, router: PolicyRouter, train: _Split, dev: _Split,
                 bounds: tuple[float, float], ctx: ScoringContext, spec: EvalSpec
                 ) -> tuple[PolicyRouter, list[dict[str, Any]]]:
    """The policy router retrained at each label_lambda, keeping the best Rank Score on dev."""
    if router.label_lambda is None or "label_lambda" in spec.params.get(name, {}) \
            or dev.data.n_samples == 0:
        return router, []
    as_trained = Scenario(TUNED, cost_weight=0.0)
    points, fitted = [], []
    # the end-to-end routers search a shorter grid on a CPU (each value trains a transformer)
    for lam in getattr(router, "label_lambda_grid", None) or spec.label_lambdas:
        candidate = make_router(name, **{**spec.params.get(name, {}), "label_lambda": lam})
        candidate.fit(train.data, bounds=bounds, X=_x(candidate, train))
        values = score(candidate.route(dev.data, as_trained, _x(candidate, dev)), dev.data,
                       as_trained, ctx)
        points.append({"label_lambda": lambda_label(lam), **values})
        fitted.append(candidate)
    best = max(range(len(points)),
               key=lambda i: np.nan_to_num(points[i]["rank_score"], nan=-1.0))
    chosen = fitted[best]
    assert isinstance(chosen, PolicyRouter)
    return chosen, points


def _for_scenario(  # noqa: PLR0913 - the evaluation loop's state, passed explicitly
        routers: dict[str, BaseRouter], scenario: Scenario, parts: dict[str, _Split],
        bounds: tuple[float, float], ctx: ScoringContext, spec: EvalSpec,
        doc: dict[str, Any], seed: int, auto: Scenario | None = None
        ) -> tuple[dict[str, BaseRouter], dict[str, Scenario]]:
    """The routers that take part in ``scenario`` and the scenario each decides under.

    In ``cost_weight@dev`` quality routers get their cost_weight and policy routers their
    label_lambda from dev. Policy routers sit out any other scenario they cannot decide
    (threshold, or a cost_weight they were not trained for); the document says so.
    """
    active, chosen = dict(routers), {name: scenario for name in routers}
    for name, router in routers.items():
        if spec.target and scenario.name != TUNED and isinstance(router, QualityRouter):
            _calibrated(name, router, scenario, parts["dev"], bounds, spec, doc, seed,
                        active, chosen)
        elif name == AUTO and scenario.name == TUNED and auto is not None:
            chosen[name] = auto                 # settled on dev with the selection
        elif scenario.name == TUNED and isinstance(router, QualityRouter):
            chosen[name], sweep = _tune(router, parts["dev"], ctx, spec)
            doc["curves"].append({"router": name, "parameter": "cost_weight", "split": "dev",
                                  "seed": seed, "selected": chosen[name].cost_weight,
                                  "cost_axis": chosen[name].cost_axis, "points": sweep})
        elif scenario.name == TUNED and isinstance(router, PolicyRouter):
            tuned, sweep = _tune_policy(name, router, parts["train"], parts["dev"], bounds,
                                        ctx, spec)
            active[name], chosen[name] = tuned, Scenario(TUNED, cost_weight=0.0)
            if sweep:
                doc["curves"].append({"router": name, "parameter": "label_lambda",
                                      "split": "dev", "seed": seed,
                                      "selected": lambda_label(float(tuned.label_lambda or 0)),
                                      "points": sweep})
        elif isinstance(router, PolicyRouter):
            try:
                router.check_scenario(scenario)
            except ScenarioMismatchError as exc:
                del active[name]
                if seed == 0:
                    doc.setdefault("skipped", []).append(
                        {"router": name, "scenario": scenario.name, "reason": str(exc)})
    return active, chosen


def _calibrated(  # noqa: PLR0913 - the evaluation loop's state, passed explicitly
        name: str, router: QualityRouter, scenario: Scenario, dev: _Split,
        bounds: tuple[float, float], spec: EvalSpec, doc: dict[str, Any], seed: int,
        active: dict[str, BaseRouter], chosen: dict[str, Scenario]) -> None:
    """``scenario`` with its knob calibrated on dev to ``spec.target`` for ``router`` (kept
    under the scenario's name, so its rows sit beside the baselines'); a router that cannot
    meet the target on dev sits the scenario out, and the document says so."""
    assert spec.target is not None and _x(router, dev) is not None
    try:
        calibrated, values = calibrate(router, dev.data, _x(router, dev),
                                       Target.parse(spec.target),
                                       scenario, bounds)
    except ScenarioError as exc:
        del active[name]
        doc.setdefault("skipped", []).append({"router": name, "scenario": scenario.name,
                                              "seed": seed, "reason": str(exc)})
        return
    chosen[name] = calibrated.with_params(name=scenario.name)
    knob = "cost_weight" if calibrated.family == "utility" else "tau"
    doc.setdefault("calibrations", []).append({
        "router": name, "scenario": scenario.name, "seed": seed, "target": spec.target,
        knob: getattr(calibrated, knob), "dev": {k: clean(v) for k, v in values.items()}})


def evaluate_bench(bench: Bench, spec: EvalSpec = EvalSpec(),
                   progress: Progress | None = None, executor: Executor | None = None
                   ) -> dict[str, Any]:
    """Fit every router on each seed's train split and score it on ``spec.splits``.

    Learned routers get ``spec.features``. In the ``cost_weight@dev`` scenario each quality
    router's cost_weight, and each policy router's label_lambda (a retraining per value), is
    the one with the best Rank Score on dev; baselines decide as always. Policy routers sit out
    the scenarios they cannot decide (listed under ``skipped``).

    The work is cut into jobs, one per (seed, learned router) and one per seed for a run of
    baselines (:func:`plan_jobs`); ``executor`` runs them (default: one after the other, here;
    :class:`vlroute.evaluation.executors.RayExecutor` on a Ray cluster) and their parts are
    merged in job order, so every executor writes the same document but for timings.
    Returns a ``vlroute-results/2`` document (see :mod:`vlroute.evaluation.results`).
    """
    note = progress or (lambda _msg: None)
    m = bench.matrices(list(spec.models) if spec.models else None, all_models=spec.all_models,
                       fields=scored_fields(spec.scenarios))
    if spec.features is not None and len(spec.features) != m.n_samples:
        raise ValueError(f"features have {len(spec.features)} rows; the bench has "
                         f"{m.n_samples} samples.")
    if spec.tokens is not None and len(spec.tokens) != m.n_samples:
        raise ValueError(f"token features have {len(spec.tokens)} rows; the bench has "
                         f"{m.n_samples} samples.")
    bounds = cost_bounds(m.cost)
    bounds_10k = (bounds[0] * 1e4, bounds[1] * 1e4)
    names = router_names(spec, m.models)
    doc = new_document(bench, spec, m, bounds_10k)
    doc["protocol"] = spec.protocol
    if spec.protocol == "random" and bench.manifest.get("split", {}).get("official"):
        doc["protocol_note"] = ("random protocol: the set's official split is ignored, as "
                                "VL-RouterBench's per-sample splits do")
    seeds = [_seed_matrices(bench, m, k, spec.protocol) for k in range(spec.seeds)]
    jobs = plan_jobs(names, spec.seeds)
    run = executor or LocalExecutor()
    parts = run.map(run_job, jobs, seeds, spec, bounds, note=note)
    rows: list[dict[str, Any]] = []
    times: dict[str, list[float]] = {}
    for k, mk in enumerate(seeds):
        mine = [part for job, part in zip(jobs, parts, strict=True) if job.seed == k]
        for p in mine:
            if p["auto"] is not None:
                doc.setdefault("auto", []).append(p["auto"])
        for s in range(len(spec.scenarios)):
            for key in ("curves", "skipped", "calibrations", "breakdown"):
                entries = [e for p in mine for e in p["scenarios"][s][key]]
                if entries:
                    doc.setdefault(key, []).extend(entries)
            for split in spec.splits:
                rows.extend(r for p in mine for r in p["scenarios"][s]["rows"]
                            if r["split"] == split)
        for p in mine:
            for name, values in p["times"].items():
                times.setdefault(name, []).extend(values)
        train = _Split.of(mk, "train", None).data
        doc["seeds"].append({"seed": k, "reference_model": m.models[reference_model(train)],
                             "best_single_by_rank": m.models[
                                 BestSingleByRankRouter().fit(train, bounds=bounds).choice_],
                             "split_sizes": {s: int((mk.splits == s).sum())
                                             for s in ("train", "dev", "test")}})
    _finish(doc, rows, times, spec, m, bounds_10k)
    return doc


def scored_fields(scenarios: Sequence[Scenario]) -> tuple[str, ...]:
    """The matrices a run reads: quality, cost (Rank Score), latency (AIL) and energy when a
    scenario's cost is energy; never the token counts."""
    energy = any(s.by == "energy" for s in scenarios)
    return ("quality", "cost", "latency", *(("energy",) if energy else ()))


def router_names(spec: EvalSpec, models: Sequence[str]) -> list[str]:
    """Every router a run over ``models`` scores, in the document's order: the asked ones,
    the two baselines gap closed is measured against, then each single model."""
    singles = [f"single:{model}" for model in models] if spec.singles else []
    return list(dict.fromkeys([*spec.routers, "oracle", "best_single_by_rank", *singles]))


@dataclass(frozen=True)
class Job:
    """One unit of an evaluation: some routers (a learned one, or a run of baselines) on one
    seed."""

    seed: int
    names: tuple[str, ...]


#: baselines gap closed is measured against (every job fits them, only their own job
#: reports them)
_REFERENCES = ("oracle", "best_single_by_rank")


def plan_jobs(names: list[str], seeds: int) -> list[Job]:
    """The jobs of a run, seed by seed: each learned router alone (``auto`` included), each
    run of consecutive training-free routers together (they fit in milliseconds)."""
    groups: list[list[str]] = []
    for name in names:
        light = name.startswith("single:") or name in BASELINES
        if light and groups and all(n.startswith("single:") or n in BASELINES
                                    for n in groups[-1]):
            groups[-1].append(name)
        else:
            groups.append([name])
    return [Job(k, tuple(g)) for k in range(seeds) for g in groups]


def run_job(job: Job, seeds: list[RoutingMatrices], spec: EvalSpec,
            bounds: tuple[float, float], note: Progress | None = None) -> dict[str, Any]:
    """Fit and score ``job``'s routers on its seed (see :func:`evaluate_bench`): the auto
    entry, per scenario the rows and document entries of its routers, and their timings."""
    say = note or (lambda _msg: None)
    mk = seeds[job.seed]
    bounds_10k = (bounds[0] * 1e4, bounds[1] * 1e4)
    parts = {s: _Split.of(mk, s, spec.features, spec.tokens) for s in ("train", "dev", "test")}
    ctx = ScoringContext(bounds_10k, reference_model(parts["train"].data))
    own = set(job.names)
    names = [*job.names, *(n for n in _REFERENCES if n not in own)]
    fitted = _fit([n for n in names if n != AUTO], parts["train"], bounds, spec)
    out: dict[str, Any] = {"auto": None, "scenarios": [], "times": {}}
    auto = None
    if AUTO in own:
        choice = _select_auto(parts, bounds, ctx, spec, say)
        fitted[AUTO], auto = choice.router, choice.scenario
        out["auto"] = {"seed": job.seed, **choice.summary()}
    routers = {n: fitted[n] for n in names}
    times: dict[str, list[float]] = {}
    for scenario in spec.scenarios:
        doc: dict[str, Any] = {"curves": [], "breakdown": []}
        active, chosen = _for_scenario(routers, scenario, parts, bounds, ctx, spec, doc,
                                       job.seed, auto)
        rows: list[dict[str, Any]] = []
        for split in spec.splits:
            rows.extend(r for r in _score_split(active, chosen, parts[split], ctx, split,
                                                job.seed, spec, doc, times)
                        if r["router"].removesuffix("+task") in own)
        out["scenarios"].append({"rows": rows, **{
            key: [e for e in doc.get(key, []) if e["router"] in own]
            for key in ("curves", "skipped", "calibrations", "breakdown")}})
    out["times"] = {n: v for n, v in times.items() if n in own}
    return out


def _select_auto(parts: dict[str, _Split], bounds: tuple[float, float], ctx: ScoringContext,
                 spec: EvalSpec, note: Progress) -> AutoChoice:
    """``auto``'s choice on this seed's dev split (its fitted router and scenario)."""
    train, dev = parts["train"], parts["dev"]
    if train.X is None or dev.X is None:
        raise ValueError("auto needs request features; run `vlroute features` first.")
    return select_auto(train.data, dev.data, train.X, dev.X, bounds,
                       tune=lambda r, d, x: _tune(r, _Split(d, x), ctx, spec)[0],
                       progress=note)


def _score_split(  # noqa: PLR0913 - the evaluation loop's state, passed explicitly
        routers: dict[str, BaseRouter], chosen: dict[str, Scenario], part: _Split,
                 ctx: ScoringContext, split: str, seed: int, spec: EvalSpec,
                 doc: dict[str, Any], times: dict[str, list[float]]) -> list[dict[str, Any]]:
    scored = {}
    for name, router in routers.items():
        scenario = chosen[name]
        decisions, seconds = _timed_route(router, part, scenario)
        times.setdefault(name, []).append(seconds / max(part.data.n_samples, 1))
        scored[name] = score(decisions, part.data, scenario, ctx)
        if isinstance(router, PolicyRouter) and router.label_lambda is not None:
            scored[name]["label_lambda"] = lambda_label(float(router.label_lambda))
        elif scenario.cost_weight is not None and scenario.name == TUNED:
            scored[name]["cost_weight"] = scenario.cost_weight
            scored[name]["cost_axis"] = scenario.cost_axis
        if isinstance(router, QualityRouter) and _x(router, part) is not None:
            # at 6 decimals: the last bits of the predictions depend on the BLAS threads of
            # the process (a Ray worker has one), and nothing is said beyond the 4th
            scored[name]["ece"] = round(expected_calibration_error(
                router.predict_quality(_x(router, part)), part.data.quality), 6)
        if seed == 0 and split == "test" and spec.breakdown and name in spec.routers:
            doc["breakdown"].extend(breakdown_rows(name, scenario, decisions, part.data))
        if "task" in spec.hints and isinstance(router, QualityRouter) \
                and "task" in router.hints and part.X is not None:
            hinted = router.decide(router.predictions_for(part.X, scenario, part.data.tasks),
                                   scenario)
            scored[f"{name}+task"] = {**score(hinted, part.data, scenario, ctx),
                                      **{k: v for k, v in scored[name].items()
                                         if k in ("cost_weight", "cost_axis")}}
    ref_rs, orc_rs = (scored["best_single_by_rank"]["rank_score"],
                      scored["oracle"]["rank_score"])
    out = []
    for name, values in scored.items():
        base = name.removesuffix("+task")
        values["gap_closed"] = gap_closed(values["rank_score"], ref_rs, orc_rs)
        out.append({"router": name, "kind": _kind(routers[base]),
                    "scenario": chosen[base].name, "split": split, "seed": seed,
                    "hints": "task" if name != base else None, **values})
    return out


def _kind(router: BaseRouter) -> str:
    """"quality", "policy" or "baseline" (training-free), for tables and figures."""
    if isinstance(router, QualityRouter):
        return "quality"
    return "policy" if isinstance(router, PolicyRouter) else "baseline"


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
    doc["bench"].update(n_samples=m.n_samples, n_models=m.n_models)


__all__ = ["EvalSpec", "Job", "bench_section", "evaluate_bench", "plan_jobs", "router_names",
           "run_job"]
