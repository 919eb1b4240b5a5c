"""Neural routers on standardised features: the MLP as a per-model quality estimator, and
VL-RouterBench's soft-label MLP and linear (softmax regression) policy routers."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from vlroute._typing import FloatArray
from vlroute.routers._arrays import standardiser
from vlroute.routers._params import Constraint, Interval, Sizes
from vlroute.routers._torch import TrainConfig, forward, train_network
from vlroute.routers.labels import soft_targets
from vlroute.routers.policy import PolicyRouter
from vlroute.routers.quality import CANDIDATES, SEED, QualityRouter

POSITIVE = Interval(float, 0, open_low=True)
#: what the neural routers' training parameters accept
TRAINING: dict[str, Constraint] = {
    "hidden_sizes": Sizes(), "learning_rate": POSITIVE, "weight_decay": Interval(float, 0),
    "max_epochs": Interval(int, 1), "batch_size": Interval(int, 1),
    "patience": Interval(int, 1), "random_state": SEED}
#: a soft-label trade-off (inf: the cheapest correct model) and its cost multiplier
LABELS: dict[str, Constraint] = {
    "label_lambda": Interval(float, 0, allow_inf=True), "cost_scale": POSITIVE}


def _sigmoid(z: FloatArray) -> FloatArray:
    with np.errstate(over="ignore"):
        out: FloatArray = 1.0 / (1.0 + np.exp(-z))
    return out


class _Net:
    """Shared parameters of the neural routers (sklearn names)."""

    hidden_sizes: tuple[int, ...]
    learning_rate: float
    weight_decay: float
    max_epochs: int
    batch_size: int
    patience: int
    random_state: int
    activation: str = "relu"

    def _config(self, n: int) -> TrainConfig:
        if any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}.")
        return TrainConfig(hidden_sizes=tuple(int(h) for h in self.hidden_sizes),
                           activation="relu" if self.activation == "relu" else "identity",
                           learning_rate=self.learning_rate, weight_decay=self.weight_decay,
                           max_epochs=self.max_epochs, batch_size=min(self.batch_size, n),
                           patience=self.patience, random_state=self.random_state)


class MLPRouter(_Net, QualityRouter):
    """A multi-output MLP: one sigmoid output per model, binary cross-entropy on quality
    (graded scores are soft targets), missing labels masked.

    Parameters
    ----------
    hidden_sizes : tuple of int
        Widths of the ReLU layers (VL-RouterBench used 2048, 1024 on a GPU; the default fits
        2 CPU cores).
    learning_rate, weight_decay, max_epochs, batch_size, patience : Adam training, with
        early stopping on a grouped hold-out of the train split.
    random_state : int
        Seed.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {**TRAINING,
                                                               "candidates": CANDIDATES}

    def __init__(self, *, hidden_sizes: tuple[int, ...] = (256,), learning_rate: float = 1e-3,
                 weight_decay: float = 1e-4, max_epochs: int = 300, batch_size: int = 256,
                 patience: int = 5, random_state: int = 0, candidates: str = "all") -> None:
        self.hidden_sizes = tuple(hidden_sizes)
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.patience = patience
        self.random_state = random_state
        self.candidates = candidates

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        norm = standardiser(X)
        Z = (X - norm["mean"]) / norm["scale"]
        mask = np.isfinite(quality).astype(float)
        layers = train_network(Z, np.nan_to_num(np.clip(quality, 0, 1)), mask, "bce",
                               self._config(len(X)), self._holdout_train)
        return {**norm, **layers}

    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        Z = (X - state["mean"]) / state["scale"]
        return _sigmoid(forward(state, Z, self.activation))


class MLPPolicyRouter(_Net, PolicyRouter):
    """VL-RouterBench's MLP router: softmax over models, soft cross-entropy on the soft labels
    of ``label_lambda`` (cost_scale 100; hard cheapest-correct labels for inf).

    Parameters
    ----------
    label_lambda : float
        The accuracy-cost trade-off of the labels (grid 0, 10, 100, 1000, 10000, inf).
    cost_scale : float
        Multiplies USD per request in the labels.
    hidden_sizes, learning_rate, weight_decay, max_epochs, batch_size, patience,
    random_state : as :class:`MLPRouter`.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {**TRAINING, **LABELS}
    label_lambda: float

    def __init__(self, *, label_lambda: float = 100.0,  # noqa: PLR0913 - sklearn-style
                 cost_scale: float = 100.0, hidden_sizes: tuple[int, ...] = (256,),
                 learning_rate: float = 1e-3,
                 weight_decay: float = 1e-4, max_epochs: int = 300, batch_size: int = 256,
                 patience: int = 5, random_state: int = 0) -> None:
        self.label_lambda = label_lambda
        self.cost_scale = cost_scale
        self.hidden_sizes = tuple(hidden_sizes)
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.patience = patience
        self.random_state = random_state

    def _fit_policy(self, X: FloatArray, quality: FloatArray, cost: FloatArray,
                    holdout: np.ndarray) -> Any:
        targets, keep = soft_targets(quality, cost, float(self.label_lambda), self.cost_scale)
        norm = standardiser(X)
        Z = (X[keep] - norm["mean"]) / norm["scale"]
        layers = train_network(Z, targets, np.ones_like(targets), "soft_ce",
                               self._config(len(Z)), holdout[keep])
        return {**norm, **layers}

    def _policy(self, state: Any, X: FloatArray) -> FloatArray:
        return forward(state, (X - state["mean"]) / state["scale"], self.activation)


class LinearPolicyRouter(MLPPolicyRouter):
    """VL-RouterBench's linear router: softmax regression on the soft labels (cost_scale 1),
    full-batch Adam with learning rate 0.01 and an L2 penalty of strength 1 / C per request.

    Parameters
    ----------
    label_lambda : float
        The accuracy-cost trade-off of the labels.
    cost_scale : float
        Multiplies USD per request in the labels (1, as in the reference).
    C : float
        Inverse L2 strength (sklearn's convention: the penalty is |w|^2 / (2 C n)).
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {**TRAINING, **LABELS,
                                                               "C": POSITIVE}

    def __init__(self, *, label_lambda: float = 100.0, cost_scale: float = 1.0, C: float = 1.0,
                 learning_rate: float = 0.01, max_epochs: int = 200, patience: int = 5,
                 random_state: int = 0) -> None:
        super().__init__(label_lambda=label_lambda, cost_scale=cost_scale, hidden_sizes=(),
                         learning_rate=learning_rate, weight_decay=0.0,
                         max_epochs=max_epochs, batch_size=1 << 30, patience=patience,
                         random_state=random_state)
        self.C = C

    def _config(self, n: int) -> TrainConfig:
        config = super()._config(n)
        return TrainConfig(**{**vars(config), "weight_decay": 1.0 / (self.C * max(n, 1))})
