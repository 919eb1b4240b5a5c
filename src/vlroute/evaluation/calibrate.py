"""Calibrate a scenario to a user target on the dev split (never the test split).

Targets: ``cost_per_request<=USD``, ``edge_share>=SHARE`` and ``apsp_drop<=FRACTION`` (relative
drop of APSP against the reference model: the most accurate cloud-tier model on dev). The
scenario's family decides the knob: cost_weight (utility) or tau (threshold). Among the settings
that meet the target on dev, the one that does best on what the target trades away is kept:
accuracy for cost and edge-share targets, cost advantage for an APSP-drop target.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlroute._typing import FloatArray
from vlroute.data.matrices import RoutingMatrices
from vlroute.errors import ScenarioError
from vlroute.evaluation.scoring import ScoringContext, reference_model, score
from vlroute.routers.quality import QualityRouter
from vlroute.scenarios import Scenario

_TARGET = re.compile(r"^\s*(cost_per_request|edge_share|apsp_drop)\s*(<=|>=)\s*([0-9.eE+-]+)\s*$")
_DIRECTIONS = {"cost_per_request": "<=", "edge_share": ">=", "apsp_drop": "<="}
_SYNTAX = "cost_per_request<=USD, edge_share>=SHARE or apsp_drop<=FRACTION"
#: the accepted bounds of each target: (low, high, in words)
_RANGES = {"cost_per_request": (0.0, math.inf, "a finite cost in USD >= 0"),
           "edge_share": (0.0, 1.0, "a share in [0, 1]"),
           "apsp_drop": (0.0, 1.0, "a fraction in [0, 1]")}
TAUS = tuple(np.round(np.linspace(0.0, 1.0, 101), 3).tolist())
WEIGHTS = (0.0, *np.round(np.geomspace(1e-3, 10.0, 80), 6).tolist())


@dataclass(frozen=True)
class Target:
    """A user target: ``kind`` in cost_per_request / edge_share / apsp_drop, and its bound."""

    kind: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Target:
        """``"edge_share>=0.8"``, ``"cost_per_request<=0.002"`` or ``"apsp_drop<=0.05"``:
        shares and drops in [0, 1], a cost in USD >= 0; anything else raises ScenarioError."""
        match = _TARGET.match(text)
        if not match or _DIRECTIONS[match[1]] != match[2]:
            raise ScenarioError(f"Cannot parse target {text!r}; expected {_SYNTAX}.")
        kind = match[1]
        try:
            bound = float(match[3])
        except ValueError:
            raise ScenarioError(f"Target {text!r}: {match[3]!r} is not a number; expected "
                                f"{_SYNTAX}.") from None
        low, high, what = _RANGES[kind]
        if not (math.isfinite(bound) and low <= bound <= high):
            raise ScenarioError(f"Target {text!r}: {kind} must be {what}, got {match[3]}.")
        return cls(kind, bound)

    def met(self, values: dict[str, Any], reference_apsp: float) -> bool:
        """Whether scored ``values`` meet the target."""
        if self.kind == "cost_per_request":
            return bool(values["avg_cost_per_10k"] / 1e4 <= self.bound + 1e-15)
        if self.kind == "edge_share":
            return bool(values["edge_share"] >= self.bound - 1e-12)
        drop = 1.0 - values["apsp"] / reference_apsp if reference_apsp > 0 else 0.0
        return bool(drop <= self.bound + 1e-12)


def calibrate(router: QualityRouter, dev: RoutingMatrices, X_dev: FloatArray, target: Target,
              base: Scenario, bounds: tuple[float, float]) -> tuple[Scenario, dict[str, Any]]:
    """The setting of ``base``'s knob that meets ``target`` on dev, and its dev metrics.

    Raises ScenarioError when no setting meets the target on dev.
    """
    ctx = ScoringContext((bounds[0] * 1e4, bounds[1] * 1e4), reference_model(dev))
    ref = np.full(dev.n_samples, ctx.reference, dtype=np.int64)
    ref_apsp = score(ref, dev, base, ctx)["apsp"]
    knob, grid = ("cost_weight", WEIGHTS) if base.family == "utility" else ("tau", TAUS)
    preds = router.predictions_for(X_dev, base)
    feasible = []
    for value in grid:
        scenario = base.with_params(**{knob: value}, name=f"{base.name}@{target.kind}")
        values = score(router.decide(preds, scenario), dev, scenario, ctx)
        if target.met(values, ref_apsp):
            feasible.append((scenario, values))
    if not feasible:
        raise ScenarioError(f"No {knob} meets {target.kind} {_DIRECTIONS[target.kind]} "
                            f"{target.bound} on the dev split.")
    key = "ca" if target.kind == "apsp_drop" else "avg_acc"
    return max(feasible, key=lambda sv: (np.nan_to_num(sv[1][key], nan=-np.inf),
                                         sv[1]["edge_share"]))
