"""VL-RouterBench metrics: accuracy, cost, Rank Score, Oracle and the share of the gap closed.

All functions are pure: they take decisions (one model column per request) and matrices.
Quality q is in [0, 1]; costs are USD per request unless a function says otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from vlroute._typing import FloatArray, IntArray

EPS = 1e-12


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


def cost_bounds(cost: FloatArray) -> tuple[float, float]:
    """Rank Score bounds: min and max over models of each model's mean cost (same unit).

    Use the whole bench (every split), as VL-RouterBench does.
    """
    means = np.nanmean(cost, axis=0)
    return float(np.nanmin(means)), float(np.nanmax(means))


def rank_score(avg_acc: float, avg_cost: float, *, c_min: float, c_max: float,
               beta: float = 0.1) -> float:
    """VL-RouterBench's Rank Score, in [0, 100].

    C_norm = clip((log2 c_max - log2 clip(cost, c_min, c_max)) / (log2 c_max - log2 c_min), 0, 1)
    and S = (1 + beta) A C_norm / (beta A + C_norm), with A = clip(avg_acc, 0, 1) and
    ``avg_cost`` in the unit of the bounds.

    Examples
    --------
    >>> round(rank_score(0.956, 0.37, c_min=0.143, c_max=10.68), 2)
    93.67
    """
    if not (math.isfinite(avg_acc) and math.isfinite(avg_cost)):
        return math.nan
    if not 0 < c_min <= c_max:
        raise ValueError(f"Cost bounds must satisfy 0 < c_min <= c_max, got {c_min}, {c_max}.")
    cost = min(max(avg_cost, c_min), c_max)
    c_norm = (math.log2(c_max) - math.log2(cost)) / (math.log2(c_max) - math.log2(c_min) + EPS)
    c_norm = min(max(c_norm, 0.0), 1.0)
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


def gap_closed(rs: float, rs_reference: float, rs_oracle: float) -> float | None:
    """(RS - RS_ref) / (RS_oracle - RS_ref); None when the denominator is not positive."""
    denominator = rs_oracle - rs_reference
    if not math.isfinite(denominator) or denominator <= 0 or not math.isfinite(rs):
        return None
    return (rs - rs_reference) / denominator
