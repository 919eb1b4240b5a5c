"""``auto``: the router a bench should serve, chosen on its dev split (never on test).

A bounded search: each family of :data:`SPACE` is fitted on the train split with per-sample
labels and with group-mean labels (each training group's mean quality per model: DynaMath's
10 variants of a question disagree often, and that noise is no feature's to predict), or on
one row per training group (``per="group"``: its centroid and mean quality), and its
cost_weight and cost axis are tuned on dev by Rank Score; every single model is a candidate
too ("always model X" wins when dev says routing does not pay). The router with the best dev
Rank Score (ties go to the earlier, simpler candidate) has to *earn* its hop: it is
preferred to the best single model by Rank Score on train (the reference of gap closed) only
when it beats that model on at least
:data:`CONFIDENCE` of :data:`RESAMPLES` bootstrap resamples of the dev split (a small dev
split otherwise picks routers whose edge is noise). Routers stay free of metrics: the
choice is made here, in the evaluation layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlroute._typing import FloatArray
from vlroute.data.matrices import RoutingMatrices
from vlroute.evaluation.scoring import ScoringContext, clean, reference_model, score
from vlroute.routers import make_router
from vlroute.routers.baselines import BestSingleByRankRouter
from vlroute.routers.priors import ConstantRouter
from vlroute.routers.quality import QualityRouter
from vlroute.scenarios import TUNED, Scenario

#: the families ``auto`` tries, cheapest first (each fits in seconds on 2 cores at the shared
#: sets' sizes)
SPACE: tuple[tuple[str, dict[str, Any]], ...] = (
    ("knn", {}),
    ("knn", {"per": "group"}),
    ("prior", {}),
    ("blend", {"prior_weight": 0.5}),
    ("blend", {"prior_weight": 0.5, "per": "group"}),
    ("mf", {}),
)
LABELS = ("sample", "group_mean")
#: bootstrap resamples of dev, and the share a router must win against the best single model
RESAMPLES = 200
CONFIDENCE = 0.8
#: families whose predictions group-mean labels cannot change (a per-task mean is the same)
LABEL_FREE = ("prior",)


@dataclass
class AutoChoice:
    """What ``auto`` chose on dev, the fitted router, and every candidate it tried."""

    name: str
    params: dict[str, Any]
    labels: str
    scenario: Scenario
    router: QualityRouter
    dev: dict[str, Any]
    tried: list[dict[str, Any]] = field(default_factory=list)
    #: share of dev bootstrap resamples on which the best router beat the best single model
    confidence: float | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-able: the choice, its dev metrics and the candidates (best first)."""
        return {"router": self.name, "params": self.params, "labels": self.labels,
                "scenario": self.scenario.spec(), "dev": self.dev,
                "confidence_over_single": self.confidence,
                "tried": sorted(self.tried, key=lambda t: -(t["rank_score"] or -1.0))}


def labelled(train: RoutingMatrices, labels: str) -> RoutingMatrices:
    """The train split with ``labels``: "sample" (as is) or "group_mean"."""
    if labels == "sample":
        return train
    if labels == "group_mean":
        return train.group_means()
    raise ValueError(f"labels must be 'sample' or 'group_mean', got {labels!r}.")


def _has_groups(train: RoutingMatrices) -> bool:
    return len(np.unique(train.groups.astype(str))) < train.n_samples


def select_auto(  # noqa: PLR0913 - the splits and their features
        train: RoutingMatrices, dev: RoutingMatrices, X_train: FloatArray, X_dev: FloatArray,
        bounds: tuple[float, float], *,
        space: tuple[tuple[str, dict[str, Any]], ...] = SPACE, singles: bool = True,
        tune: Callable[[QualityRouter, RoutingMatrices, FloatArray], Scenario],
        progress: Callable[[str], None] | None = None) -> AutoChoice:
    """The candidate with the best Rank Score on ``dev`` (see the module docstring);
    ``tune`` settles a fitted router's utility scenario on dev."""
    ctx = ScoringContext((bounds[0] * 1e4, bounds[1] * 1e4), reference_model(train))
    note = progress or (lambda _m: None)
    label_kinds = LABELS if _has_groups(train) else LABELS[:1]
    best: AutoChoice | None = None
    tried: list[dict[str, Any]] = []
    for name, params in space:
        # a router fitted per group sees each group's mean either way
        free = name in LABEL_FREE or params.get("per") == "group"
        for labels in label_kinds[:1] if free else label_kinds:
            per = " per group" if params.get("per") == "group" else ""
            note(f"auto: {name}{per} ({labels} labels)")
            router = make_router(name, **params)
            assert isinstance(router, QualityRouter)
            router.fit(labelled(train, labels), bounds=bounds, X=X_train)
            scenario = tune(router, dev, X_dev)
            values = score(router.decide(router.predictions_for(X_dev, scenario), scenario),
                           dev, scenario, ctx)
            tried.append(_entry(name, params, labels, scenario, values))
            if best is None or _better(values, best.dev):
                best = AutoChoice(name, params, labels, scenario, router, _clean(values))
    if singles:
        # the single model to fall back on is the best one by Rank Score on train (the
        # reference of gap closed): a dev split of a few dozen requests picks singles by
        # noise; every single model's dev score is listed all the same
        reference = BestSingleByRankRouter().fit(train, bounds=bounds).choice_
        single: tuple[int, dict[str, Any]] | None = None
        for k, model in enumerate(train.models):
            scenario = Scenario(TUNED, cost_weight=0.0)
            values = score(np.full(dev.n_samples, k, dtype=np.int64), dev, scenario, ctx)
            tried.append(_entry("constant", {"model": model}, "sample", scenario, values))
            if k == reference:
                single = (k, values)
        assert single is not None
        confidence = None if best is None else _confidence(best, single[0], dev, X_dev, ctx)
        if best is None or confidence is None or confidence < CONFIDENCE:
            model = train.models[single[0]]
            router = ConstantRouter(model=model).fit(train, bounds=bounds, X=X_train)
            scenario = Scenario(TUNED, cost_weight=0.0)
            best = AutoChoice("constant", {"model": model}, "sample", scenario, router,
                              _clean(single[1]))
        best.confidence = confidence
    assert best is not None
    best.tried = tried
    return best


def _confidence(choice: AutoChoice, single: int, dev: RoutingMatrices, X_dev: FloatArray,
                ctx: ScoringContext) -> float | None:
    """The share of bootstrap resamples of dev on which ``choice`` has a higher Rank Score
    than always choosing model ``single``."""
    routed = choice.router.decide(choice.router.predictions_for(X_dev, choice.scenario),
                                  choice.scenario)
    if dev.n_samples == 0:
        return None
    rng = np.random.default_rng(0)
    fixed = np.full(dev.n_samples, single, dtype=np.int64)
    wins = 0
    for _ in range(RESAMPLES):
        rows = rng.integers(0, dev.n_samples, dev.n_samples)
        part = dev.subset(rows)
        a = score(routed[rows], part, choice.scenario, ctx)["rank_score"]
        b = score(fixed[rows], part, choice.scenario, ctx)["rank_score"]
        wins += bool(np.nan_to_num(a, nan=-1.0) > np.nan_to_num(b, nan=-1.0))
    return wins / RESAMPLES


def _better(values: dict[str, Any], than: dict[str, Any]) -> bool:
    new, old = values.get("rank_score"), than.get("rank_score")
    return new is not None and (old is None or new > old + 1e-9)


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: clean(v) for k, v in values.items()}


def _entry(name: str, params: dict[str, Any], labels: str, scenario: Scenario,
           values: dict[str, Any]) -> dict[str, Any]:
    return {"router": name, "params": params, "labels": labels, "scenario": scenario.spec(),
            "rank_score": clean(values["rank_score"]), "avg_acc": clean(values["avg_acc"]),
            "avg_cost_per_10k": clean(values["avg_cost_per_10k"])}
