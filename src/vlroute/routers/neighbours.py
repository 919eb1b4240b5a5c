"""VL-RouterBench's two embedding-geometry policy routers: PRkNN and the prototype
("K-means") router, on standardised features (research.md, router table)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from vlroute._typing import FloatArray
from vlroute.routers._arrays import standardiser, unit_rows
from vlroute.routers._params import Constraint, Interval
from vlroute.routers.labels import soft_targets
from vlroute.routers.policy import PolicyRouter


def copeland_wins(quality: FloatArray, cost: FloatArray) -> FloatArray:
    """Per request and model, how many other models it beats: higher quality, or equal
    quality at a lower cost (missing quality loses, missing cost counts as dearest)."""
    q = np.nan_to_num(quality, nan=-np.inf)
    c = np.nan_to_num(cost, nan=np.inf)
    beats = (q[:, :, None] > q[:, None, :]) | ((q[:, :, None] == q[:, None, :])
                                               & (c[:, :, None] < c[:, None, :]))
    out: FloatArray = beats.sum(axis=2).astype(float)
    return out


class PRkNNRouter(PolicyRouter):
    """Pairwise-ranking kNN (after RouterEval): the k nearest train requests (cosine on
    standardised features) vote with their Copeland scores, weighted by 1 / (1e-6 + distance).

    Parameters
    ----------
    n_neighbors : int
        k (7, as in the reference sweep).
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {"n_neighbors": Interval(int, 1)}

    def __init__(self, *, n_neighbors: int = 7) -> None:
        self.n_neighbors = n_neighbors

    def _fit_policy(self, X: FloatArray, quality: FloatArray, cost: FloatArray,
                    holdout: np.ndarray) -> Any:
        if self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {self.n_neighbors}.")
        keep = np.nan_to_num(quality, nan=0.0).max(axis=1) > 0   # drop unsolved requests
        if not keep.any():
            keep[:] = True
        norm = standardiser(X[keep])
        mean, scale = norm["mean"], norm["scale"]
        return {"mean": mean, "scale": scale, "X": unit_rows((X[keep] - mean) / scale),
                "wins": copeland_wins(quality[keep], cost[keep])}

    def _policy(self, state: Any, X: FloatArray) -> FloatArray:
        train, wins = state["X"], state["wins"]
        k = min(self.n_neighbors, len(train))
        out = np.empty((len(X), wins.shape[1]))
        for start in range(0, len(X), 1024):
            sims = unit_rows((X[start:start + 1024] - state["mean"]) / state["scale"]) @ train.T
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            dist = 1.0 - np.take_along_axis(sims, idx, axis=1)
            w = 1.0 / (1e-6 + np.clip(dist, 0.0, None))
            out[start:start + 1024] = np.einsum("bk,bkm->bm", w, wins[idx])
        return out


class PrototypeRouter(PolicyRouter):
    """One prototype per model: the mean of the (standardised, unit) train requests it should
    answer, weighted by the soft labels; choose the model whose prototype is most similar.

    Parameters
    ----------
    label_lambda : float
        Soft-label trade-off (0: uniform over the correct models, as in the reference).
    cost_scale : float
        Multiplies USD per request in the soft labels.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "label_lambda": Interval(float, 0, allow_inf=True),
        "cost_scale": Interval(float, 0, open_low=True)}
    label_lambda: float

    def __init__(self, *, label_lambda: float = 0.0, cost_scale: float = 100.0) -> None:
        self.label_lambda = label_lambda
        self.cost_scale = cost_scale

    def _fit_policy(self, X: FloatArray, quality: FloatArray, cost: FloatArray,
                    holdout: np.ndarray) -> Any:
        targets, keep = soft_targets(quality, cost, self.label_lambda, self.cost_scale)
        norm = standardiser(X)
        mean, scale = norm["mean"], norm["scale"]
        Z = unit_rows((X[keep] - mean) / scale)
        mass = targets.sum(axis=0)
        protos = unit_rows((targets.T @ Z) / np.maximum(mass, 1e-12)[:, None])
        return {"mean": mean, "scale": scale, "prototypes": protos, "used": mass > 0}

    def _policy(self, state: Any, X: FloatArray) -> FloatArray:
        sims = unit_rows((X - state["mean"]) / state["scale"]) @ state["prototypes"].T
        out: FloatArray = np.where(state["used"], sims, -np.inf)
        return out
