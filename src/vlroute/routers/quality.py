"""Routers that estimate quality per model, so any scenario applies without retraining.

``predict_quality(X)`` gives, per request and model, P(correct) for binary labels or the
expected score for graded ones. Threshold scenarios need P(solved) = P(10 q >= MES): for
binary labels that is the same estimate; for graded labels the estimator is refitted on the
labels 1[10 q >= MES] of the train split (cached per MES).
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
from threadpoolctl import ThreadpoolController

from vlroute._typing import FloatArray, IntArray
from vlroute.data.matrices import RoutingMatrices
from vlroute.errors import NotFittedError
from vlroute.objectives import pareto_frontier, solved
from vlroute.routers._arrays import unit_rows
from vlroute.routers._params import Constraint, Flag, Interval, Options
from vlroute.routers.base import LearnedRouter
from vlroute.scenarios import Scenario

#: the ``candidates`` parameter of every quality router
CANDIDATES = Options(("all", "pareto"))
#: a seed
SEED = Interval(int, 0)


class QualityRouter(LearnedRouter):
    """Estimate per-model quality from request features, then let the scenario decide.

    ``candidates="pareto"`` (a constructor parameter of every subclass) lets the decision pick
    only the models on the train split's accuracy / cost Pareto frontier: a model dominated on
    average is rarely worth its noise in per-request estimates.
    """

    candidates: str = "all"

    def _fit(self, train: RoutingMatrices, X: FloatArray | None) -> None:
        assert X is not None
        if self.candidates not in ("all", "pareto"):
            raise ValueError(f"candidates must be 'all' or 'pareto', got {self.candidates!r}.")
        allowed = np.ones(train.n_models, dtype=bool)
        if self.candidates == "pareto":
            allowed[:] = False
            allowed[pareto_frontier(self.mean_cost_["usd"].tolist(),
                                    self.mean_quality_.tolist())] = True
        self.allowed_ = allowed
        self.n_features_in_ = X.shape[1]
        q = train.quality
        finite = q[np.isfinite(q)]
        self.binary_ = train.rates or bool(np.isin(finite, (0.0, 1.0)).all())
        self._X_train = X
        self._quality_train = q
        self._holdout_train = self._holdout(train)
        self.state_ = self._fit_estimator(X, q)
        self._by_mes: dict[float, Any] = {}

    #: the request hints the router reads (e.g. ("task",)); others ignore hints
    hints: ClassVar[tuple[str, ...]] = ()

    def predict_quality(self, X: FloatArray, tasks: np.ndarray | None = None) -> FloatArray:
        """(n_samples, n_models) estimated quality in [0, 1]; ``tasks``: each request's task
        hint (None where it sends none), read by routers whose ``hints`` name it."""
        if not hasattr(self, "state_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first.")
        self._check_features(X, X.shape[0])
        return np.clip(self._predict_hinted(self.state_, X, tasks), 0.0, 1.0)

    def predict_solved(self, X: FloatArray, mes: float,
                       tasks: np.ndarray | None = None) -> FloatArray:
        """(n_samples, n_models) estimated P(10 q >= mes)."""
        if self.binary_:
            return self.predict_quality(X, tasks)
        if mes not in self._by_mes:
            labels = solved(self._quality_train, mes)
            self._by_mes[mes] = self._fit_estimator(self._X_train, labels)
        return np.clip(self._predict_hinted(self._by_mes[mes], X, tasks), 0.0, 1.0)

    def _predict_hinted(self, state: Any, X: FloatArray, tasks: np.ndarray | None) -> FloatArray:
        """Predictions with request hints; the default ignores them."""
        return self._predict(state, X)

    def _route(self, data: RoutingMatrices, scenario: Scenario,
               X: FloatArray | None) -> IntArray:
        assert X is not None
        return self.decide(self.predictions_for(X, scenario), scenario)

    def predictions_for(self, X: FloatArray, scenario: Scenario,
                        tasks: np.ndarray | None = None) -> FloatArray:
        """What ``scenario`` decides on: quality (utility) or P(solved) (threshold)."""
        return (self.predict_quality(X, tasks) if scenario.family == "utility"
                else self.predict_solved(X, scenario.solved_mes, tasks))

    def decide(self, predictions: FloatArray, scenario: Scenario,
               available: np.ndarray | None = None) -> IntArray:
        """Choices from precomputed predictions (sweeps predict once, decide many times):
        among the candidate models (``allowed_``) that are ``available`` (a boolean mask over
        models; the gateway's backends that are up), with the train split's mean costs and
        the bench's cost bounds. This is the one decision rule of eval and of the gateway."""
        mask = self.allowed_ if available is None else self.allowed_ & available
        if not mask.any():
            raise ValueError("no candidate model is available to decide among.")
        predictions = np.where(mask, predictions, -np.inf)
        costs = self.mean_cost_
        return scenario.select(predictions, costs["usd"], costs["latency"], costs["energy"],
                               bounds=self.bounds_ if scenario.by == "usd" else None,
                               tiers=self.tiers_)

    @abstractmethod
    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        """Fitted state for labels ``quality`` (n_train, n_models), NaN where missing."""

    @abstractmethod
    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        """(n, n_models) predictions from a fitted state."""


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """Discovering the loaded thread pools is slow (milliseconds): do it once."""
    return ThreadpoolController()


def nearest(sims: FloatArray, k: int) -> FloatArray:
    """A 0/1 matrix marking each row's ``k`` most similar train requests. Similarities are
    compared at 9 decimals and ties go to the lower train index, so that a batch of one
    (the gateway) and a batch of a thousand (eval), whose products differ in the last bits,
    pick the same neighbours (near-duplicate requests tie exactly)."""
    r = np.round(sims, 9)
    idx = np.argpartition(-r, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(r, idx, axis=1).min(axis=1, keepdims=True)
    above = r > kth
    ties = r == kth
    need = k - above.sum(axis=1, keepdims=True)
    chosen: FloatArray = (above | (ties & (np.cumsum(ties, axis=1) <= need))).astype(float)
    return chosen


class KNNRouter(QualityRouter):
    """Mean quality of the k most similar train requests (cosine), per model.

    Parameters
    ----------
    n_neighbors : int
        k.
    weighted : bool
        Weight neighbours by their (positive) similarity.
    per : {"sample", "group"}
        Neighbours among the train requests, or among the train split's groups (the groups
        the split keeps together: DynaMath's 10 variants of one question), each the centroid
        of its requests' unit features with their mean quality per model. Per sample, the k
        nearest are mostly variants of a few questions; per group, k distinct questions
        vote once each. With one request per group both are the same.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "n_neighbors": Interval(int, 1), "weighted": Flag(), "candidates": CANDIDATES,
        "per": Options(("sample", "group"))}

    def __init__(self, *, n_neighbors: int = 60, weighted: bool = False,
                 candidates: str = "pareto", per: str = "sample") -> None:
        self.n_neighbors = n_neighbors
        self.weighted = weighted
        self.candidates = candidates
        self.per = per

    def _fit(self, train: RoutingMatrices, X: FloatArray | None) -> None:
        assert X is not None
        if self.per == "group":
            train, X = group_centroids(train, X)
        super()._fit(train, X)

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        return {"X": unit_rows(X), "y": quality}

    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        train, y = state["X"], state["y"]
        k = min(self.n_neighbors, len(train))
        out = np.empty((len(X), y.shape[1]))
        # Small batches run single-threaded: waking BLAS threads costs more than the product,
        # and they contend with torch's spinning OpenMP threads right after the encoders.
        if len(X) < 64:
            with _blas_controller().limit(limits=1, user_api="blas"):
                self._knn_blocks(X, train, y, k, out)
        else:
            self._knn_blocks(X, train, y, k, out)
        return out

    def _knn_blocks(self, X: FloatArray, train: FloatArray, y: FloatArray, k: int,
                    out: FloatArray) -> None:
        finite = np.isfinite(y).astype(float)
        labels = np.nan_to_num(y)
        for start in range(0, len(X), 1024):          # bounds the (batch, n_train) block
            sims = unit_rows(X[start:start + 1024]) @ train.T
            w = nearest(sims, k)
            if self.weighted:
                w = w * np.clip(sims, 1e-6, None)
            out[start:start + 1024] = (w @ labels) / np.maximum(w @ finite, 1e-12)


def group_centroids(train: RoutingMatrices, X: FloatArray) -> tuple[RoutingMatrices,
                                                                    FloatArray]:
    """One row per group of ``train``: the centroid of its rows' unit features and their
    mean quality per model (group order: first appearance)."""
    _, first, codes = np.unique(train.groups.astype(str), return_index=True,
                                return_inverse=True)
    order = np.argsort(first, kind="stable")            # groups in order of appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    codes = rank[codes.ravel()]
    n_groups = len(order)
    centroids = np.zeros((n_groups, X.shape[1]))
    np.add.at(centroids, codes, unit_rows(X))
    finite = np.isfinite(train.quality)
    sums, counts = np.zeros((n_groups, train.n_models)), np.zeros((n_groups, train.n_models))
    np.add.at(sums, codes, np.where(finite, train.quality, 0.0))
    np.add.at(counts, codes, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    binary = bool(np.isin(train.quality[finite], (0.0, 1.0)).all())
    grouped = replace(train.subset(first[order]), quality=means,
                      rates=train.rates or binary)
    return grouped, centroids


class LinearRouter(QualityRouter):
    """One L2-regularised logistic regression per model (binary labels) or ridge regression
    (graded labels), on standardised features.

    Parameters
    ----------
    C : float
        Inverse regularisation strength (ridge uses alpha = 1 / C).
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "C": Interval(float, 0, open_low=True), "candidates": CANDIDATES}

    def __init__(self, *, C: float = 0.1, candidates: str = "all") -> None:
        self.C = C
        self.candidates = candidates

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(X)
        Z = scaler.transform(X)
        m = quality.shape[1]
        coef, intercept = np.zeros((m, X.shape[1])), np.zeros(m)
        logistic = np.zeros(m, dtype=bool)
        for k in range(m):
            rows = np.isfinite(quality[:, k])
            y = quality[rows, k]
            binary = np.isin(y, (0.0, 1.0)).all()
            if len(np.unique(y)) < 2:     # constant label: predict it
                intercept[k] = float(y.mean()) if len(y) else 0.0
            elif binary:
                fitted = LogisticRegression(C=self.C, max_iter=2000).fit(Z[rows], y)
                coef[k], intercept[k], logistic[k] = fitted.coef_[0], fitted.intercept_[0], True
            else:
                fitted_r = Ridge(alpha=1.0 / self.C).fit(Z[rows], y)
                coef[k], intercept[k] = fitted_r.coef_, fitted_r.intercept_
        return {"mean": scaler.mean_, "scale": scaler.scale_, "coef": coef,
                "intercept": intercept, "logistic": logistic}

    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        Z = (X - state["mean"]) / state["scale"]
        raw = Z @ state["coef"].T + state["intercept"]                 # (n, n_models)
        with np.errstate(over="ignore"):
            prob = 1.0 / (1.0 + np.exp(-raw))
        out: FloatArray = np.where(state["logistic"], prob, raw)
        return out


class GBDTRouter(QualityRouter):
    """One LightGBM model per candidate: binary classifier or regressor on graded labels.

    Parameters
    ----------
    n_estimators, learning_rate, num_leaves, min_child_samples : LightGBM parameters.
    random_state : int
        Seed (deterministic, single-threaded training).
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "n_estimators": Interval(int, 1), "learning_rate": Interval(float, 0, open_low=True),
        "num_leaves": Interval(int, 2), "min_child_samples": Interval(int, 0),
        "random_state": SEED, "candidates": CANDIDATES}

    def __init__(self, *, n_estimators: int = 200, learning_rate: float = 0.03,
                 num_leaves: int = 15, min_child_samples: int = 20,
                 random_state: int = 0, candidates: str = "all") -> None:
        self.candidates = candidates
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.random_state = random_state

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        import lightgbm as lgb

        params: dict[str, Any] = {
                  "n_estimators": self.n_estimators, "learning_rate": self.learning_rate,
                  "num_leaves": self.num_leaves, "min_child_samples": self.min_child_samples,
                  "random_state": self.random_state, "n_jobs": 1, "verbose": -1,
                  "deterministic": True, "colsample_bytree": 0.5, "subsample": 0.8,
                  "subsample_freq": 1}
        models: list[Any] = []
        for k in range(quality.shape[1]):
            rows = np.isfinite(quality[:, k])
            y = quality[rows, k]
            if len(np.unique(y)) < 2:
                models.append(float(y.mean()) if len(y) else 0.0)
            elif np.isin(y, (0.0, 1.0)).all():
                models.append(lgb.LGBMClassifier(**params).fit(X[rows], y.astype(int)).booster_)
            else:
                models.append(lgb.LGBMRegressor(**params).fit(X[rows], y).booster_)
        return models

    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        # A binary booster predicts the probability, a regression booster the score.
        return np.stack([np.full(len(X), m) if isinstance(m, float) else m.predict(X)
                         for m in state], axis=1)

    def export_state(self, state: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """LightGBM models as their text format (no pickle)."""
        return {"models": [m if isinstance(m, float) else m.model_to_string()
                           for m in state]}, {}

    def import_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
        """Boosters back from their text format."""
        import lightgbm as lgb

        return [m if isinstance(m, float) else lgb.Booster(model_str=m) for m in meta["models"]]
