"""Policy routers: trained on one trade-off, they output a choice rather than a quality.

VL-RouterBench's soft-label routers, PRkNN and the prototype router learn "which model should
answer" for the ``label_lambda`` (or rule) they were trained with. They decide under the
utility family at that trade-off only: ``route`` takes a utility scenario with cost_weight 0
("decide as trained") and refuses anything else with :class:`ScenarioMismatchError`. To move
along the accuracy-cost curve, retrain with another ``label_lambda`` (``vlroute eval`` does so
and picks it on dev), or use a quality router, which applies any scenario without retraining.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from vlroute._typing import FloatArray, IntArray
from vlroute.data.matrices import RoutingMatrices
from vlroute.errors import NotFittedError, ScenarioMismatchError
from vlroute.routers.base import LearnedRouter
from vlroute.scenarios import Scenario


class PolicyRouter(LearnedRouter):
    """Score each model for a request (higher = should answer), then take the best."""

    #: the training trade-off swept by ``vlroute eval`` (None: the router has none)
    label_lambda: float | None = None

    def _fit(self, train: RoutingMatrices, X: FloatArray | None) -> None:
        assert X is not None
        self.n_features_in_ = X.shape[1]
        self.state_ = self._fit_policy(X, train.quality, train.cost, self._holdout(train))

    def predict_policy(self, X: FloatArray) -> FloatArray:
        """(n_samples, n_models) scores; the argmax is the choice."""
        if not hasattr(self, "state_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first.")
        self._check_features(X, X.shape[0])
        return self._policy(self.state_, X)

    def check_scenario(self, scenario: Scenario) -> None:
        """Raise unless ``scenario`` is one this policy decides: utility, cost_weight 0."""
        if scenario.family == "utility" and scenario.cost_weight == 0.0:
            return
        trained = ("its fixed rule" if self.label_lambda is None
                   else f"label_lambda={self.label_lambda}")
        raise ScenarioMismatchError(
            f"{type(self).__name__} is a policy router trained at {trained}; it decides only "
            f"at that trade-off (a utility scenario with cost_weight=0), not under scenario "
            f"{scenario.name!r} ({scenario.spec()}). Retrain it with another label_lambda, or "
            "use a quality router (knn, linear, gbdt, ovr, mlp, mf) for threshold scenarios "
            "and cost_weight sweeps.")

    def _route(self, data: RoutingMatrices, scenario: Scenario,
               X: FloatArray | None) -> IntArray:
        assert X is not None
        return self.decide(self.predictions_for(X, scenario), scenario)

    def predictions_for(self, X: FloatArray, scenario: Scenario) -> FloatArray:
        """The policy's scores, for the one scenario it decides (see :meth:`check_scenario`)."""
        self.check_scenario(scenario)
        return self.predict_policy(X)

    def decide(self, predictions: FloatArray, scenario: Scenario,
               available: np.ndarray | None = None) -> IntArray:
        """The best-scored model among those ``available`` (a boolean mask over models);
        ties go to the cheaper model on average."""
        self.check_scenario(scenario)
        mask = np.ones(len(self.models_), dtype=bool) if available is None else available
        if not mask.any():
            raise ValueError("no candidate model is available to decide among.")
        scores = np.where(mask, np.asarray(predictions, dtype=float), -np.inf)
        order = np.argsort(self.mean_cost_["usd"], kind="stable")
        out: IntArray = order[np.argmax(scores[:, order], axis=1)]
        return out

    @abstractmethod
    def _fit_policy(self, X: FloatArray, quality: FloatArray, cost: FloatArray,
                    holdout: np.ndarray) -> Any:
        """Fitted state from train features, quality and USD cost (n_train, n_models)."""

    @abstractmethod
    def _policy(self, state: Any, X: FloatArray) -> FloatArray:
        """(n, n_models) scores from a fitted state."""
