"""The router contract shared by every router.

A router is fitted on the train split's matrices (and, for learned routers, features) and
then chooses one model per request under a scenario. Training-free baselines look only at the
train matrices in ``fit``; only the Oracle looks at the labels of the requests it routes, and
it says so with ``uses_labels``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import numpy as np

from vlroute._typing import FloatArray, IntArray
from vlroute.data.matrices import RoutingMatrices, column_means
from vlroute.errors import NotFittedError
from vlroute.routers._params import Constraint, validate_params
from vlroute.scenarios import Scenario


class BaseRouter(ABC):
    """Fit on train matrices, then route requests under a scenario.

    Parameters are set in ``__init__`` and nothing else happens there; ``fit`` checks them
    against ``_parameter_constraints`` (one entry per constructor parameter), fitted state ends
    in ``_`` and ``fit`` returns ``self``.
    """

    #: what each constructor parameter accepts (see :mod:`vlroute.routers._params`)
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {}

    #: the router reads the quality of the requests it routes (an upper bound, not a competitor)
    uses_labels: ClassVar[bool] = False
    #: the router needs request features (X) in fit and route
    needs_features: ClassVar[bool] = False

    def fit(self, train: RoutingMatrices, *, bounds: tuple[float, float],
            X: FloatArray | None = None) -> Self:
        """Learn from the train split. ``bounds`` are the bench's Rank Score cost bounds;
        ``X`` (n_train, n_features) the request features, for routers that need them."""
        validate_params(self)
        self.models_ = train.models
        self.tiers_ = train.tiers
        self.bounds_ = bounds
        # a column without values (a model never run, a matrix not loaded) has mean NaN
        self.mean_quality_ = column_means(train.quality)
        self.mean_cost_ = {dim: np.full(train.n_models, np.nan)
                           if field in train.unloaded else column_means(train.matrix(dim))
                           for dim, field in (("usd", "cost"), ("latency", "latency"),
                                              ("energy", "energy"))}
        self._check_features(X, train.n_samples)
        self._fit(train, X)
        return self

    def _check_features(self, X: FloatArray | None, n: int) -> None:
        if not self.needs_features:
            return
        if X is None:
            raise ValueError(f"{type(self).__name__} needs request features X; compute them "
                             "with `vlroute features`.")
        if X.ndim != 2 or X.shape[0] != n:
            raise ValueError(f"X has shape {X.shape}; expected ({n}, n_features).")
        if hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features; the router was fitted on "
                             f"{self.n_features_in_}.")

    def _fit(self, train: RoutingMatrices, X: FloatArray | None) -> None:  # noqa: B027
        """Subclass hook for extra fitting (none by default)."""

    def route(self, data: RoutingMatrices, scenario: Scenario,
              X: FloatArray | None = None) -> IntArray:
        """One model column (into ``data.models``) per request of ``data``."""
        if not hasattr(self, "models_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first.")
        if tuple(data.models) != tuple(self.models_):
            raise ValueError(f"{type(self).__name__} was fitted on models {self.models_}, "
                             f"asked to route among {data.models}.")
        self._check_features(X, data.n_samples)
        return self._route(data, scenario, X)

    @abstractmethod
    def _route(self, data: RoutingMatrices, scenario: Scenario,
               X: FloatArray | None) -> IntArray:
        """Subclass hook: the decisions."""

    def _constant(self, data: RoutingMatrices, column: int) -> IntArray:
        return np.full(data.n_samples, column, dtype=np.int64)


class LearnedRouter(BaseRouter):
    """A router fitted on request features, whose fitted model lives in ``state_``.

    Subclasses turn the state into JSON-able metadata and named arrays for artifacts (no
    pickle); the default handles a dict of arrays.
    """

    needs_features: ClassVar[bool] = True
    #: the fitted model, set by ``fit``
    state_: Any
    #: share of train groups held out for early stopping (neural routers)
    holdout_fraction: ClassVar[float] = 0.1

    def _holdout(self, train: RoutingMatrices) -> np.ndarray:
        """A seeded, grouped hold-out of the train split: variants of one question stay on
        one side, so early stopping sees unseen questions."""
        return grouped_holdout(train.groups, self.holdout_fraction)

    def export_state(self, state: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """A fitted state as JSON-able metadata and named arrays (default: a dict of arrays)."""
        return {}, {k: np.asarray(v) for k, v in state.items()}

    def import_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
        """Inverse of :meth:`export_state`."""
        return dict(arrays)


def grouped_holdout(groups: np.ndarray, fraction: float) -> np.ndarray:
    """A seeded hold-out of about ``fraction`` of the groups (row labels or codes): rows of one
    group stay on one side; none with fewer than 10 groups."""
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    if n_groups < 10:
        return np.zeros(len(codes), dtype=bool)
    held = np.random.default_rng(0).permutation(n_groups)[:max(1, round(n_groups * fraction))]
    out: np.ndarray = np.isin(codes, held)
    return out


def argbest(values: FloatArray, tie_cost: FloatArray) -> int:
    """Index of the highest value; ties go to the lower ``tie_cost``."""
    v = np.nan_to_num(values, nan=-np.inf)
    top = np.flatnonzero(v >= v.max() - 1e-12)
    return int(top[np.argmin(tie_cost[top])])
