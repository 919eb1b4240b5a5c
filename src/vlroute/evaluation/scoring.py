"""Score one set of decisions with every metric of a scenario."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlroute._typing import IntArray
from vlroute.data.matrices import RoutingMatrices, column_means
from vlroute.metrics import (
    ail,
    apsp,
    avg_acc,
    avg_cost_per_10k,
    cost_advantage,
    edge_share,
    rank_score,
    rcs,
)
from vlroute.scenarios import Scenario

METRICS = ("avg_acc", "avg_cost_per_10k", "rank_score", "gap_closed", "apsp", "ca", "ail",
           "edge_share", "rcs", "apsp_drop", "ece")


@dataclass(frozen=True)
class ScoringContext:
    """What every row is scored against: cost bounds ($ per 10K) and the reference model."""

    bounds_per_10k: tuple[float, float]
    reference: int


def reference_model(train: RoutingMatrices) -> int:
    """The most accurate cloud-tier model on train (the most accurate model if none is cloud)."""
    means = np.nan_to_num(column_means(train.quality), nan=-np.inf)
    cloud = np.array([t == "cloud" for t in train.tiers])
    if cloud.any():
        means = np.where(cloud, means, -np.inf)
    return int(np.argmax(means))


def score(decisions: IntArray, data: RoutingMatrices, scenario: Scenario,
          ctx: ScoringContext) -> dict[str, Any]:
    """Every metric of ``decisions`` on ``data`` (gap_closed is filled in by the caller)."""
    c_min, c_max = ctx.bounds_per_10k
    acc = avg_acc(decisions, data.quality)
    cost = avg_cost_per_10k(decisions, data.cost)
    ref = np.full(data.n_samples, ctx.reference, dtype=np.int64)
    mes = scenario.solved_mes
    cost_dim = data.matrix(scenario.by)
    apsp_v, ail_v = apsp(decisions, data.quality, mes), ail(decisions, data.latency)
    apsp_ref = apsp(ref, data.quality, mes)
    ca_v = cost_advantage(decisions, cost_dim, ctx.reference)
    return {
        "n": int(data.n_samples),
        "avg_acc": acc,
        "avg_cost_per_10k": cost,
        "rank_score": rank_score(acc, cost, c_min=c_min, c_max=c_max),
        "gap_closed": None,
        "apsp": apsp_v,
        "ca": ca_v,
        "ail": ail_v,
        "edge_share": edge_share(decisions, data.tiers),
        "rcs": rcs(apsp_v, ca_v, ail_v, apsp_ref=apsp_ref,
                   ail_ref=ail(ref, data.latency), weights=scenario.rcs_weights),
        # relative APSP drop against the reference model (always-cloud for an edge/cloud pair)
        "apsp_drop": 1.0 - apsp_v / apsp_ref if apsp_ref else None,
        # calibration of a quality router's predictions (filled in by the caller)
        "ece": None,
    }


def clean(value: Any) -> Any:
    """JSON-safe numbers: NaN and infinities become None, numpy scalars become Python."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
