"""VL-RouterBench metrics: accuracy, cost and the share of the gap closed (the Rank Score and
the Oracle are objective definitions in :mod:`vlroute.objectives`).

All functions are pure: they take decisions (one model column per request) and matrices.
Quality q is in [0, 1]; costs are USD per request unless a function says otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from vlroute._typing import FloatArray, IntArray
from vlroute.data.matrices import column_means


def chosen(matrix: FloatArray, decisions: IntArray) -> FloatArray:
    """The entry of ``matrix`` (n, m) picked by ``decisions`` (n,) in each row."""
    return matrix[np.arange(len(decisions)), decisions]


def avg_acc(decisions: IntArray, quality: FloatArray) -> float:
    """Mean quality of the chosen models, in [0, 1] (missing pairs are skipped)."""
    values = chosen(quality, decisions)
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def avg_cost_per_10k(decisions: IntArray, cost: FloatArray) -> float:
    """Mean cost of the chosen models, in USD per 10,000 requests."""
    values = chosen(cost, decisions)
    return float(np.nanmean(values) * 1e4) if np.isfinite(values).any() else math.nan


#: the low Rank Score bound is at least this share of the high one, so that a free model
#: (price 0 or ``cost_usd`` 0: valid) counts as costing a millionth of the dearest model's mean
#: rather than making log2 c_min = -inf
COST_FLOOR_RATIO = 1e-6
#: ... and at least this many USD per request (a bench where every model is free)
COST_FLOOR_USD = 1e-9


def cost_bounds(cost: FloatArray) -> tuple[float, float]:
    """Rank Score bounds (c_min, c_max) in USD per request: min and max over models of each
    model's mean cost, with c_max >= COST_FLOOR_USD and c_min >= max(COST_FLOOR_RATIO * c_max,
    COST_FLOOR_USD) (1e-6 of c_max, 1e-9 USD), so that free models are valid: they score
    C_norm = 1, as the cheapest. A bench where every model is free gets c_min = c_max.

    Use the whole bench (every split), as VL-RouterBench does.
    """
    means = column_means(cost)
    high = max(float(np.nanmax(means)), COST_FLOOR_USD)
    low = max(float(np.nanmin(means)), COST_FLOOR_RATIO * high, COST_FLOOR_USD)
    return low, high


def gap_closed(rs: float, rs_reference: float, rs_oracle: float) -> float | None:
    """(RS - RS_ref) / (RS_oracle - RS_ref); None when the denominator is not positive."""
    denominator = rs_oracle - rs_reference
    if not math.isfinite(denominator) or denominator <= 0 or not math.isfinite(rs):
        return None
    return (rs - rs_reference) / denominator
