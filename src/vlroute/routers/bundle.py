"""Serving bundles: a fitted router with everything one of its decisions needs.

A bundle is a router artifact (see :mod:`vlroute.routers.persistence`) whose ``router.json``
also holds a ``bundle`` section: the scenario settled on the dev split (``cost_weight@dev``,
or calibrated to a ``--target``), the candidate models, the cost bounds and per-model mean
costs it decides with, and the cost-catalog entries those costs came from. ``vlroute eval
--artifact`` and the gateway's ``vlroute/auto`` both decide through :meth:`Bundle.decide`,
which is the router's own decision rule: what eval measured is what the gateway serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlroute._typing import FloatArray, IntArray
from vlroute.routers.base import BaseRouter
from vlroute.routers.persistence import IncompatibleArtifactError, artifact_document, load_router
from vlroute.routers.policy import PolicyRouter
from vlroute.routers.quality import QualityRouter
from vlroute.scenarios import AUTO, Scenario, parse_scenario

#: the keys every bundle section carries
SECTION_KEYS = ("scenario", "scenario_name", "candidates", "cost_bounds_usd", "mean_cost",
                "catalog", "feature_names")


@dataclass(frozen=True)
class Bundle:
    """A servable router, its bundled scenario and where it came from."""

    router: QualityRouter | PolicyRouter
    scenario: Scenario
    feature_spec: dict[str, Any]
    section: dict[str, Any]
    path: Path | None = None

    @property
    def models(self) -> tuple[str, ...]:
        """The router's models (columns of its predictions)."""
        return tuple(self.router.models_)

    @property
    def candidates(self) -> tuple[str, ...]:
        """The models a decision may choose (a policy router may choose any)."""
        return tuple(self.section["candidates"])

    @property
    def feature_names(self) -> tuple[str | None, str | None]:
        """The stored feature names (text, image) the router was trained on."""
        text, image = self.section.get("feature_names") or (None, None)
        return text, image

    def resolve(self, scenario: Scenario) -> Scenario:
        """``auto`` becomes the bundled scenario (named ``auto``); any other stays."""
        if scenario.name == AUTO:
            return self.scenario.with_params(name=AUTO)
        return scenario

    @property
    def hints(self) -> tuple[str, ...]:
        """The request hints the router reads (``("task",)`` for the task-prior routers)."""
        return tuple(getattr(self.router, "hints", ()))

    def predictions(self, X: FloatArray, scenario: Scenario,
                    tasks: np.ndarray | None = None) -> FloatArray:
        """(n, n_models) what ``scenario`` decides on: quality, P(solved) or policy scores;
        ``tasks``: the requests' task hints, for a router that reads them."""
        if isinstance(self.router, QualityRouter):
            return self.router.predictions_for(X, self.resolve(scenario), tasks)
        return self.router.predictions_for(X, self.resolve(scenario))

    def mask(self, available: np.ndarray | None = None) -> np.ndarray:
        """Candidate models that are ``available`` (a boolean mask over :attr:`models`)."""
        allowed = np.isin(np.array(self.models, dtype=object),
                          np.array(self.candidates, dtype=object))
        return allowed if available is None else allowed & np.asarray(available, dtype=bool)

    def decide(self, predictions: FloatArray, scenario: Scenario,
               available: np.ndarray | None = None) -> IntArray:
        """One model column per row: the router's decision rule over the bundle's candidates
        that are ``available``, with the bundle's mean costs and cost bounds."""
        return self.router.decide(predictions, self.resolve(scenario),
                                  available=None if available is None
                                  else np.asarray(available, dtype=bool))

    def margins(self, predictions: FloatArray, scenario: Scenario,
                available: np.ndarray | None = None) -> FloatArray:
        """How far each decision is from flipping (see :meth:`Scenario.margins`)."""
        scenario = self.resolve(scenario)
        masked = np.where(self.mask(available), predictions, -np.inf)
        if isinstance(self.router, PolicyRouter):
            return Scenario("policy", cost_weight=0.0).margins(
                masked, np.zeros(len(self.models)))
        costs = self.router.mean_cost_
        return scenario.margins(masked, costs["usd"], costs["latency"], costs["energy"],
                                bounds=self.router.bounds_ if scenario.by == "usd" else None)

    def describe(self) -> dict[str, Any]:
        """What ``/health`` and ``vlroute eval --artifact`` show of the bundle."""
        return {"router": self.section.get("router_name", type(self.router).__name__),
                "scenario": self.scenario.spec(), "chosen_by": self.section["scenario_name"],
                "candidates": list(self.candidates), "models": list(self.models),
                "cost_bounds_usd": self.section["cost_bounds_usd"],
                "hints": list(self.hints),
                "path": str(self.path) if self.path else None}


def bundle_section(router: BaseRouter, scenario: Scenario, catalog: dict[str, Any],
                   feature_names: tuple[str | None, str | None], *,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``bundle`` section of a fitted router's artifact; refuses a router that cannot
    serve (a training-free baseline, or one that has not been fitted)."""
    _check_servable(router, "the router")
    assert isinstance(router, QualityRouter | PolicyRouter)
    candidates = ([m for m, ok in zip(router.models_, router.allowed_, strict=True) if ok]
                  if isinstance(router, QualityRouter) else list(router.models_))
    if isinstance(router, PolicyRouter):
        router.check_scenario(scenario)
    return {"scenario": scenario.spec(), "scenario_name": scenario.name,
            "router_name": None, "candidates": candidates,
            "cost_bounds_usd": [float(b) for b in router.bounds_],
            "mean_cost": {dim: [float(v) for v in router.mean_cost_[dim]]
                          for dim in ("usd", "latency", "energy")},
            "catalog": catalog, "feature_names": list(feature_names), **(extra or {})}


def _check_servable(router: BaseRouter, where: str) -> None:
    if not isinstance(router, QualityRouter | PolicyRouter):
        raise IncompatibleArtifactError(
            f"{where} is a {type(router).__name__}, which has nothing to serve: training-free "
            "baselines read labels or fix one model. Serve a learned router (vlroute train "
            "knn ...), or send requests to a backend by name.")
    if not hasattr(router, "state_"):
        raise IncompatibleArtifactError(f"{where} is not fitted.")


def load_bundle(path: Path, *, feature_spec: dict[str, Any] | None = None) -> Bundle:
    """A servable bundle from ``path``; refuses, with the reason, an artifact that is not one
    (no bundle section, a baseline router, a scenario the router cannot decide, unreadable
    files, other features than ``feature_spec``)."""
    path = Path(path)
    doc = artifact_document(path)
    section = doc.get("bundle")
    if not isinstance(section, dict) or any(k not in section for k in SECTION_KEYS):
        raise IncompatibleArtifactError(
            f"{path}: a router artifact without a serving bundle (its scenario, candidates "
            "and cost bounds); write one with `vlroute train` or `vlroute demo`.")
    router = load_router(path, feature_spec=feature_spec)
    _check_servable(router, f"{path}")
    assert isinstance(router, QualityRouter | PolicyRouter)
    unknown = [m for m in section["candidates"] if m not in router.models_]
    if unknown or not section["candidates"]:
        raise IncompatibleArtifactError(f"{path}: bundle candidates {section['candidates']} "
                                        f"are not among the router's models.")
    try:
        scenario = parse_scenario(section["scenario"]).with_params(
            name=section["scenario_name"])
        if isinstance(router, PolicyRouter):
            router.check_scenario(scenario)
    except Exception as exc:     # any problem means: cannot serve
        raise IncompatibleArtifactError(f"{path}: the bundled scenario "
                                        f"{section.get('scenario')!r} cannot be served "
                                        f"({exc}).") from exc
    if isinstance(router, QualityRouter):
        allowed = np.isin(np.array(router.models_, dtype=object),
                          np.array(section["candidates"], dtype=object))
        router.allowed_ = allowed           # the bundle's mask is the decision's mask
    section = {**section, "router_name": section.get("router_name") or doc.get("router")}
    return Bundle(router, scenario, doc.get("feature_spec") or {}, section, path)
