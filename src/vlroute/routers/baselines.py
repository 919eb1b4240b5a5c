"""Training-free baselines: Oracle, strongest / cheapest single models, per-dataset strongest,
random, the best single model by Rank Score, and any fixed single model."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from vlroute._typing import FloatArray, IntArray
from vlroute.data.matrices import RoutingMatrices, column_means
from vlroute.objectives import oracle_decisions, rank_score
from vlroute.routers._params import Constraint, Interval
from vlroute.routers.base import BaseRouter, argbest
from vlroute.scenarios import Scenario


class OracleRouter(BaseRouter):
    """Per request, the cheapest model (in the scenario's cost dimension) among those with
    the highest quality. It reads the labels: an upper bound, not a competitor."""

    uses_labels: ClassVar[bool] = True

    def _route(self, data: RoutingMatrices, scenario: Scenario,
               X: FloatArray | None = None) -> IntArray:
        return oracle_decisions(data.quality, data.matrix(scenario.by))


class StrongestGlobalRouter(BaseRouter):
    """The single model with the highest mean quality on train (ties: cheaper)."""

    def _route(self, data: RoutingMatrices, scenario: Scenario,
               X: FloatArray | None = None) -> IntArray:
        return self._constant(data, argbest(self.mean_quality_, self.mean_cost_["usd"]))


class CheapestGlobalRouter(BaseRouter):
    """The single model with the lowest mean cost on train, in the scenario's dimension."""

    def _route(self, data: RoutingMatrices, scenario: Scenario,
               X: FloatArray | None = None) -> IntArray:
        cost = self.mean_cost_[scenario.by]
        return self._constant(data, argbest(-cost, -self.mean_quality_))


class StrongestPerDatasetRouter(BaseRouter):
    """Per dataset, the model with the highest mean quality on train; a bench holding one
    dataset uses ``task`` instead. Unseen keys fall back to the strongest global model."""

    def _keys(self, data: RoutingMatrices) -> np.ndarray:
        return data.tasks if self.by_ == "task" else data.datasets

    def _fit(self, train: RoutingMatrices, X: FloatArray | None) -> None:
        self.by_ = "task" if len(set(train.datasets.tolist())) <= 1 else "dataset"
        keys = np.asarray([str(k) for k in self._keys(train)], dtype=object)
        self.best_: dict[str, int] = {}
        for key in sorted(set(keys.tolist())):
            means = column_means(train.quality, keys == key)
            self.best_[key] = argbest(means, self.mean_cost_["usd"])
        self.fallback_ = argbest(self.mean_quality_, self.mean_cost_["usd"])

    def _route(self, data: RoutingMatrices, scenario: Scenario,
               X: FloatArray | None = None) -> IntArray:
        return np.array([self.best_.get(str(k), self.fallback_) for k in self._keys(data)],
                        dtype=np.int64)


class RandomRouter(BaseRouter):
    """Uniformly random model per request, seeded."""

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {"random_state": Interval(int, 0)}

    def __init__(self, *, random_state: int = 42) -> None:
        self.random_state = random_state

    def _route(self, data: RoutingMatrices, scenario: Scenario,
               X: FloatArray | None = None) -> IntArray:
        rng = np.random.default_rng(self.random_state)
        return rng.integers(0, data.n_models, size=data.n_samples).astype(np.int64)


class BestSingleByRankRouter(BaseRouter):
    """The single model with the highest Rank Score on train: the fair reference for any
    router (the most accurate model can be the dearest and score near 0)."""

    def _fit(self, train: RoutingMatrices, X: FloatArray | None) -> None:
        c_min, c_max = self.bounds_
        self.scores_ = np.array([
            rank_score(float(q), float(c), c_min=c_min, c_max=c_max)
            for q, c in zip(self.mean_quality_, self.mean_cost_["usd"], strict=True)])
        self.choice_ = argbest(self.scores_, self.mean_cost_["usd"])

    def _route(self, data: RoutingMatrices, scenario: Scenario,
               X: FloatArray | None = None) -> IntArray:
        return self._constant(data, self.choice_)


class SingleModelRouter(BaseRouter):
    """Always the same model."""

    def __init__(self, *, model: str) -> None:
        self.model = model

    def _route(self, data: RoutingMatrices, scenario: Scenario,
               X: FloatArray | None = None) -> IntArray:
        return self._constant(data, data.model_index(self.model))
