"""Serving bundles from benches: train one (``vlroute train``, ``vlroute demo``) and score a
saved one on a split (``vlroute eval --artifact``), through the decision rule the gateway
serves (:meth:`vlroute.routers.bundle.Bundle.decide`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlroute._typing import FloatArray
from vlroute.data.bench import Bench
from vlroute.data.matrices import RoutingMatrices
from vlroute.evaluation.auto import labelled, select_auto
from vlroute.evaluation.calibrate import Target, calibrate
from vlroute.evaluation.runner import AUTO, tune_cost_weight
from vlroute.evaluation.scoring import ScoringContext, clean, reference_model, score
from vlroute.metrics import cost_bounds, gap_closed
from vlroute.routers import make_router
from vlroute.routers.baselines import BestSingleByRankRouter, OracleRouter
from vlroute.routers.bundle import Bundle, bundle_section
from vlroute.routers.persistence import IncompatibleArtifactError, save_router
from vlroute.routers.policy import PolicyRouter
from vlroute.routers.quality import QualityRouter
from vlroute.scenarios import TUNED, Scenario, parse_scenario

CATALOG_COLUMNS = ("tier", "profile", "price_in", "price_out", "price_status", "image_rule")


@dataclass(frozen=True)
class TrainedBundle:
    """What :func:`train_bundle` made: the bundle, and what it was settled on."""

    bundle: Bundle
    info: dict[str, Any]
    dev: dict[str, Any]


def catalog_entries(bench: Bench, models: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each model's cost-catalog entry as the bench recorded it (prices per 1M tokens, tier,
    image-token rule): what the bundle's mean costs were estimated from."""
    table = bench.models.set_index("model")
    return {m: {c: clean(_plain(table.at[m, c])) for c in CATALOG_COLUMNS if c in table}
            for m in models}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def train_bundle(  # noqa: PLR0913 - what a bundle is made of
        bench: Bench, name: str, params: dict[str, Any], X: FloatArray | None,
        feature_spec: dict[str, Any] | None, *, scenario: str = TUNED,
        target: str | None = None, models: tuple[str, ...] | None = None,
        feature_names: tuple[str | None, str | None] = (None, None),
        labels: str = "sample") -> TrainedBundle:
    """Fit ``name`` on the train split of ``bench`` (over ``models``, default the bench's
    candidates) and settle its scenario on the dev split: ``cost_weight@dev`` tunes the
    cost_weight by Rank Score, a ``target`` calibrates the scenario's knob, any other
    scenario is kept as given. A policy router keeps the trade-off it was trained for.
    ``auto`` chooses the family, labels and cost_weight on dev (:mod:`.auto`); ``labels``
    ("sample" or "group_mean") is what any other router trains on."""
    goal = Target.parse(target) if target else None       # a bad target fails before fitting
    chosen = parse_scenario(scenario)
    m = bench.matrices(list(models) if models else None)
    bounds = cost_bounds(m.cost)
    train_rows, dev_rows = m.splits == "train", m.splits == "dev"
    if X is None:
        raise ValueError(f"{name} needs request features; run `vlroute features` first.")
    extra: dict[str, Any] = {}
    if name == AUTO:
        choice = select_auto(m.subset(train_rows), m.subset(dev_rows), X[train_rows],
                             X[dev_rows], bounds,
                             tune=lambda r, d, x: tune_cost_weight(r, d, x, bounds))
        router: Any = choice.router
        labels = choice.labels
        extra["selection"] = choice.summary()
        if chosen.name == TUNED:
            chosen = choice.scenario
    else:
        router = make_router(name, **params)
        if not isinstance(router, QualityRouter | PolicyRouter):
            raise IncompatibleArtifactError(
                f"{name!r} is a training-free baseline: it has nothing to serve. Train a "
                "learned router (auto, knn, linear, gbdt, ovr, mlp, mf, prknn, ...).")
        router.fit(labelled(m.subset(train_rows), labels), bounds=bounds, X=X[train_rows])
    if isinstance(router, PolicyRouter):
        chosen = Scenario(TUNED, cost_weight=0.0) if chosen.name == TUNED else chosen
        router.check_scenario(chosen)
    elif goal is not None:
        base = chosen if chosen.name != TUNED else parse_scenario("cost_weight=0")
        chosen, _ = calibrate(router, m.subset(dev_rows), X[dev_rows], goal, base, bounds)
    elif chosen.name == TUNED:
        chosen = tune_cost_weight(router, m.subset(dev_rows), X[dev_rows], bounds)
    section = bundle_section(router, chosen, catalog_entries(bench, m.models), feature_names,
                             extra={"bench": bench.name, "target": target, "labels": labels,
                                    "source_digest": bench.manifest.get("source_digest"),
                                    **extra})
    section["router_name"] = (f"auto:{extra['selection']['router']}" if name == AUTO
                              else name)
    bundle = Bundle(router, chosen, feature_spec or {}, section)
    dev = score_split(bundle, m, X, "dev")
    info = {"bench": bench.name, "source_digest": bench.manifest.get("source_digest"),
            "trained_on": "train", "n_train": int(train_rows.sum()), "labels": labels,
            "scenario": chosen.spec(), "scenario_name": chosen.name,
            "cost_bounds_usd": list(bounds), "dev": dev["metrics"]}
    return TrainedBundle(bundle, info, dev["metrics"])


def save_bundle(trained: TrainedBundle, out: Path, *, overwrite: bool = False) -> None:
    """Write a trained bundle as an artifact folder (atomically)."""
    b = trained.bundle
    save_router(b.router, out, feature_spec=b.feature_spec, info=trained.info,
                overwrite=overwrite, bundle=b.section)


def score_split(bundle: Bundle, m: RoutingMatrices, X: FloatArray, split: str = "test"
                ) -> dict[str, Any]:
    """The bundle's decisions on ``split`` of matrices ``m`` (over the bundle's models, the
    bench's split column) and their metrics, with gap closed against the best single model
    by rank and the Oracle (both fitted on the train split)."""
    if tuple(m.models) != bundle.models:
        raise IncompatibleArtifactError(f"the bundle routes among {list(bundle.models)}; "
                                        f"the matrices hold {list(m.models)}.")
    if len(X) != m.n_samples:
        raise ValueError(f"features have {len(X)} rows; the bench has {m.n_samples} samples.")
    rows = np.flatnonzero(m.splits == split)
    if not len(rows):
        raise ValueError(f"the bench has no {split!r} samples.")
    data, Xs = m.subset(rows), X[rows]
    train = m.subset(np.flatnonzero(m.splits == "train"))
    low, high = bundle.router.bounds_
    ctx = ScoringContext((low * 1e4, high * 1e4), reference_model(train))
    preds = bundle.predictions(Xs, bundle.scenario)
    choices = bundle.decide(preds, bundle.scenario)
    values = score(choices, data, bundle.scenario, ctx)
    refs = {}
    for key, ref in (("best_single_by_rank", BestSingleByRankRouter()),
                     ("oracle", OracleRouter())):
        ref.fit(train, bounds=(low, high))
        refs[key] = score(ref.route(data, bundle.scenario), data, bundle.scenario, ctx)
    values["gap_closed"] = gap_closed(values["rank_score"],
                                      refs["best_single_by_rank"]["rank_score"],
                                      refs["oracle"]["rank_score"])
    return {"metrics": {k: clean(v) for k, v in values.items()},
            "references": {k: {kk: clean(vv) for kk, vv in v.items()} for k, v in refs.items()},
            "sample_ids": data.sample_ids, "choices": choices, "predictions": preds,
            "margins": bundle.margins(preds, bundle.scenario)}


def decision_rows(bundle: Bundle, scored: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One JSON-able row per sample: its choice, each model's score, and the decision's
    margin (how far it is from flipping)."""
    models = bundle.models
    for sid, choice, row, margin in zip(scored["sample_ids"], scored["choices"],
                                        scored["predictions"], scored["margins"], strict=True):
        yield {"sample_id": str(sid), "model": models[int(choice)],
               "scores": {m: clean(float(v)) for m, v in zip(models, row, strict=True)},
               "margin": clean(float(margin))}
