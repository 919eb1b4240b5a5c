"""``auto``: the router a bench should serve, chosen on its dev split (never on test).

A bounded search: each family of :data:`SPACE` is fitted on the train split with per-sample
labels and with group-mean labels (each training group's mean quality per model: DynaMath's
10 variants of a question disagree often, and that noise is no feature's to predict), and its
cost_weight and cost axis are tuned on dev by Rank Score; every single model is a candidate
too ("always model X" wins when dev says routing does not pay). The best dev Rank Score is
chosen; ties go to the earlier, simpler candidate. Routers stay free of metrics: the choice
is made here, in the evaluation layer.
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
from vlroute.routers.priors import ConstantRouter
from vlroute.routers.quality import QualityRouter
from vlroute.scenarios import TUNED, Scenario

#: the families ``auto`` tries, cheapest first (each fits in seconds on 2 cores at the shared
#: sets' sizes)
SPACE: tuple[tuple[str, dict[str, Any]], ...] = (
    ("knn", {}),
    ("prior", {}),
    ("blend", {"prior_weight": 0.5}),
    ("mf", {}),
)
LABELS = ("sample", "group_mean")
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

    def summary(self) -> dict[str, Any]:
        """JSON-able: the choice, its dev metrics and the candidates (best first)."""
        return {"router": self.name, "params": self.params, "labels": self.labels,
                "scenario": self.scenario.spec(), "dev": self.dev,
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
        for labels in label_kinds[:1] if name in LABEL_FREE else label_kinds:
            note(f"auto: {name} ({labels} labels)")
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
        for k, model in enumerate(train.models):
            scenario = Scenario(TUNED, cost_weight=0.0)
            values = score(np.full(dev.n_samples, k, dtype=np.int64), dev, scenario, ctx)
            tried.append(_entry("constant", {"model": model}, "sample", scenario, values))
            if best is None or _better(values, best.dev):
                router = ConstantRouter(model=model).fit(train, bounds=bounds, X=X_train)
                best = AutoChoice("constant", {"model": model}, "sample", scenario, router,
                                  _clean(values))
    assert best is not None
    best.tried = tried
    return best


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
