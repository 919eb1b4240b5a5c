"""VL-RouterBench's accuracy-cost soft labels (research.md section 1.8).

t(j) is proportional to q_j * exp(-cost_scale * label_lambda * C_j): label_lambda = 0 is
uniform over the correct models, label_lambda = inf is one-hot on the cheapest correct one.
C is USD per request, which is why the routers multiply it by ``cost_scale`` (100 for the MLP,
1 for the linear router, as in the reference code). With graded quality the score q_j takes
the place of the 0/1 correctness, and "correct" for inf means "best score".
"""

from __future__ import annotations

import math

import numpy as np

from vlroute._typing import FloatArray

#: the label_lambda grid of every VL-RouterBench sweep
LABEL_LAMBDAS = (0.0, 10.0, 100.0, 1000.0, 10000.0, math.inf)


def soft_targets(quality: FloatArray, cost: FloatArray, label_lambda: float,
                 cost_scale: float) -> tuple[FloatArray, np.ndarray]:
    """Targets for the requests that some model solves, and which rows those are.

    Returns ``(targets, keep)``: ``keep`` (n_samples,) marks the rows with some correct (q > 0)
    model (the others are dropped, as in the reference routers), ``targets`` has one row per
    kept request, summing to 1.
    """
    if not (label_lambda >= 0):
        raise ValueError(f"label_lambda must be >= 0 (or inf), got {label_lambda}.")
    w = np.clip(np.nan_to_num(np.asarray(quality, float), nan=0.0), 0.0, 1.0)
    c = np.nan_to_num(np.broadcast_to(np.asarray(cost, float), w.shape), nan=np.inf)
    keep = w.max(axis=1) > 0
    w, c = w[keep], c[keep]
    if math.isinf(label_lambda):
        best = (w >= w.max(axis=1, keepdims=True) - 1e-12) & (w > 0)
        pick = np.argmin(np.where(best, c, np.inf), axis=1)
        targets = np.zeros_like(w)
        targets[np.arange(len(w)), pick] = 1.0
        return targets, keep
    with np.errstate(divide="ignore", invalid="ignore"):
        logits = np.log(w) - cost_scale * label_lambda * np.where(w > 0, c, 0.0)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True), keep
