"""VL-RouterBench's one-vs-rest router as a quality estimator."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from vlroute._typing import FloatArray
from vlroute.routers._params import Constraint, Interval
from vlroute.routers.quality import CANDIDATES, QualityRouter


class OVRRouter(QualityRouter):
    """One logistic regression per model (``class_weight="balanced"``, as in the reference)
    on standardised features, trained on the requests that some model solves.

    The reference takes the argmax of P(correct) and ignores cost; here the estimates feed
    any scenario. Graded labels are fitted as soft targets (each request once as positive with
    weight q and once as negative with weight 1 - q: the cross-entropy on q).

    Parameters
    ----------
    C : float
        Inverse L2 regularisation strength.
    max_iter : int
        Iterations of the solver.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "C": Interval(float, 0, open_low=True), "max_iter": Interval(int, 1),
        "candidates": CANDIDATES}

    def __init__(self, *, C: float = 1.0, max_iter: int = 1000,
                 candidates: str = "all") -> None:
        self.C = C
        self.max_iter = max_iter
        self.candidates = candidates

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        from sklearn.linear_model import LogisticRegression

        keep = np.nan_to_num(quality, nan=0.0).max(axis=1) > 0
        if keep.sum() < 2:
            keep[:] = True
        mean = X[keep].mean(axis=0)
        scale = X[keep].std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        Z = (X[keep] - mean) / scale
        m = quality.shape[1]
        coef, intercept = np.zeros((m, X.shape[1])), np.zeros(m)
        for k in range(m):
            rows = np.isfinite(quality[keep, k])
            y = np.clip(quality[keep, k][rows], 0.0, 1.0)
            if len(y) == 0 or y.min() == y.max():      # constant label: its logit
                p = float(y.mean()) if len(y) else 0.0
                intercept[k] = np.log(max(p, 1e-6) / max(1 - p, 1e-6))
                continue
            Zk = Z[rows]
            labels = np.r_[np.ones(len(y)), np.zeros(len(y))]
            weights = np.r_[y, 1.0 - y]
            pos, neg = weights[:len(y)].sum(), weights[len(y):].sum()
            weights = weights * np.where(labels == 1, len(y) / (2 * pos), len(y) / (2 * neg))
            fitted = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(
                np.vstack([Zk, Zk]), labels, sample_weight=weights)
            coef[k], intercept[k] = fitted.coef_[0], fitted.intercept_[0]
        return {"mean": mean, "scale": scale, "coef": coef, "intercept": intercept}

    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        raw = ((X - state["mean"]) / state["scale"]) @ state["coef"].T + state["intercept"]
        with np.errstate(over="ignore"):
            out: FloatArray = 1.0 / (1.0 + np.exp(-raw))
        return out
