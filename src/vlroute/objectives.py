"""Objective definitions shared by routers (as training targets) and metrics.

Pure functions below the routers on the package's arrow: the Rank Score, the Oracle's choice,
what counts as solved for an MES, and the accuracy / cost Pareto frontier. ``vlroute.metrics``
re-exports them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vlroute._typing import FloatArray, IntArray

EPS = 1e-12


def rank_score(avg_acc: float, avg_cost: float, *, c_min: float, c_max: float,
               beta: float = 0.1) -> float:
    """VL-RouterBench's Rank Score, in [0, 100].

    C_norm = clip((log2 c_max - log2 clip(cost, c_min, c_max)) / (log2 c_max - log2 c_min), 0, 1)
    and S = (1 + beta) A C_norm / (beta A + C_norm), with A = clip(avg_acc, 0, 1) and
    ``avg_cost`` in the unit of the bounds. The bounds must be positive: take them from
    :func:`vlroute.metrics.cost_bounds`, which floors c_min so that free models are valid.
    With c_min = c_max (no cost spread, e.g. every model free) cost cannot separate routers
    and C_norm = 1.

    Examples
    --------
    >>> round(rank_score(0.956, 0.37, c_min=0.143, c_max=10.68), 2)
    93.67
    """
    if not (math.isfinite(avg_acc) and math.isfinite(avg_cost)):
        return math.nan
    if not 0 < c_min <= c_max:
        raise ValueError(f"Cost bounds must satisfy 0 < c_min <= c_max, got {c_min}, {c_max} "
                         "(metrics.cost_bounds floors c_min for free models).")
    span = math.log2(c_max) - math.log2(c_min)
    if span <= 0:
        c_norm = 1.0
    else:
        cost = min(max(avg_cost, c_min), c_max)
        c_norm = min(max((math.log2(c_max) - math.log2(cost)) / (span + EPS), 0.0), 1.0)
    acc = min(max(avg_acc, 0.0), 1.0)
    score = (1 + beta) * acc * c_norm / (beta * acc + c_norm + EPS)
    return 100.0 * min(max(score, 0.0), 1.0)


def oracle_decisions(quality: FloatArray, cost: FloatArray) -> IntArray:
    """Per request, the cheapest model among those with the highest quality.

    For binary labels: the cheapest correct model, else the cheapest model. Missing pairs are
    never chosen unless a row has nothing else.
    """
    q = np.where(np.isnan(quality), -np.inf, quality)
    best = q.max(axis=1, keepdims=True)
    c = np.where(q >= best - 1e-12, np.nan_to_num(cost, nan=np.inf), np.inf)
    out: IntArray = np.argmin(c, axis=1).astype(np.int64)
    return out


def solved(quality: FloatArray, mes: float) -> FloatArray:
    """1.0 where 10 q >= MES, 0.0 where not, NaN where q is missing."""
    # 1e-6: a float32 quality (an out-of-core bench) of 0.7 is 0.69999999 once widened
    out = (10.0 * quality >= mes - 1e-6).astype(float)
    return np.where(np.isnan(quality), np.nan, out)


def pareto_frontier(costs: Sequence[float], accs: Sequence[float]) -> IntArray:
    """Indices of the points no other point beats (cheaper or equal and more accurate),
    ordered by cost."""
    c = np.asarray(costs, dtype=float)
    a = np.asarray(accs, dtype=float)
    order = np.lexsort((-a, c))
    out, best = [], -math.inf
    for i in order:
        if a[i] > best + 1e-12:
            out.append(int(i))
            best = a[i]
    return np.array(out, dtype=np.int64)
