"""Pareto frontier of (cost, accuracy) points and the area under it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vlroute.objectives import pareto_frontier


def pareto_area(costs: Sequence[float], accs: Sequence[float], *, c_min: float,
                c_max: float) -> float:
    """Area under the frontier's staircase on the Rank Score's log cost scale.

    x = (log2 c - log2 c_min) / (log2 c_max - log2 c_min) in [0, 1]; y = best accuracy
    reachable at cost <= c. The area is in [0, 1]; 1 means perfect accuracy at the lowest cost.
    """
    c = np.clip(np.asarray(costs, dtype=float), c_min, c_max)
    a = np.asarray(accs, dtype=float)
    span = math.log2(c_max) - math.log2(c_min)
    if span <= 0:
        return float(np.max(a)) if len(a) else 0.0
    front = pareto_frontier(c.tolist(), a.tolist())
    xs = (np.log2(c[front]) - math.log2(c_min)) / span
    ys = a[front]
    edges = np.append(xs, 1.0)
    return float(np.sum(ys * np.diff(edges)))
