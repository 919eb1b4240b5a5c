"""ECVL-Router-style metrics, with vlroute's own definitions.

ECVL-Router names APSP, CA, AIL and RCS, but its formulas were not reachable in our sources;
these are vlroute's documented definitions (design.md), not the paper's:

- solved(x, k) = 10 q(x, k) >= MES (for binary labels q = 1 is solved for any MES in (0, 10]);
- APSP = mean over requests of solved(x, pi(x));
- CA = 1 - sum cost(pi) / sum cost(R) in a cost dimension, against a reference model R;
- AIL = mean latency of the chosen models, seconds;
- edge share = share of requests sent to edge-tier models;
- RCS = w_q APSP / APSP(R) + w_c CA + w_l (1 - AIL / AIL(R)); RCS(R) = w_q.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vlroute._typing import FloatArray, IntArray
from vlroute.metrics.routing import chosen
from vlroute.objectives import solved


def apsp(decisions: IntArray, quality: FloatArray, mes: float) -> float:
    """Average problem-solving probability of the chosen models."""
    values = chosen(solved(quality, mes), decisions)
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def cost_advantage(decisions: IntArray, cost: FloatArray, reference: int) -> float:
    """1 - total cost of the choices / total cost of always using ``reference``."""
    ref_total = float(np.nansum(cost[:, reference]))
    if ref_total <= 0:
        return math.nan
    return 1.0 - float(np.nansum(chosen(cost, decisions))) / ref_total


def ail(decisions: IntArray, latency: FloatArray) -> float:
    """Average inference latency of the chosen models, seconds."""
    values = chosen(latency, decisions)
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def edge_share(decisions: IntArray, tiers: Sequence[str]) -> float:
    """Share of requests routed to an edge-tier model."""
    is_edge = np.array([t == "edge" for t in tiers])
    return float(is_edge[decisions].mean()) if len(decisions) else math.nan


def rcs(apsp_value: float, ca_value: float, ail_value: float, *, apsp_ref: float,
        ail_ref: float, weights: tuple[float, float, float]) -> float:
    """Routing comprehensive score; the reference model itself scores ``weights[0]``."""
    w_q, w_c, w_l = weights
    if not (apsp_ref > 0 and ail_ref > 0):
        return math.nan
    return w_q * apsp_value / apsp_ref + w_c * ca_value + w_l * (1.0 - ail_value / ail_ref)
