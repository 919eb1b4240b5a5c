"""Scenarios: frozen values that turn predictions, costs and latencies into one choice each.

Two families (design.md):

- **utility** (VL-RouterBench style): argmax_k q(x, k) + cost_weight * c_k, with c_k the
  model's cost on the Rank Score's log scale (1 = cheapest, 0 = dearest);
- **threshold** (ECVL-Router style): candidates ordered by the cost dimension ``by``; the first
  whose predicted P(solved) >= tau, else the one most likely to solve. "Solved" means a 0-10
  score >= ``mes``; binary labels ignore MES.

Presets ``fast``, ``quality`` and ``eco`` are threshold scenarios; any scenario can be written
inline: ``"mes=6,tau=0.7,by=latency"``, ``"cost_weight=0.3"`` or ``"fast,tau=0.7"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from vlroute._typing import FloatArray, IntArray
from vlroute.errors import ScenarioError

CostDimension = Literal["usd", "latency", "energy"]
DIMENSIONS: tuple[str, ...] = ("usd", "latency", "energy")
#: MES used for APSP when a utility scenario names none (half the 0-10 judge scale)
DEFAULT_MES = 5.0


@dataclass(frozen=True)
class Scenario:
    """How to choose a model per request, and how its choices are scored.

    Parameters
    ----------
    name : str
        Label shown in tables and results.
    cost_weight : float, optional
        Utility family: weight of cheapness against predicted quality.
    mes : float, optional
        Minimal expected score on the 0-10 scale that counts as solved.
    tau : float, optional
        Threshold family: the P(solved) a cheaper model must reach to be chosen.
    by : {"usd", "latency", "energy"}
        Cost dimension: orders candidates (threshold), scales cheapness (utility), and is the
        dimension of the cost advantage CA.
    rcs_weights : tuple of float
        (w_q, w_c, w_l) of the routing comprehensive score.
    cost_axis : {"log", "linear"}
        Utility family: how cheapness c_k in [0, 1] is measured. "log": on the Rank Score's
        log2 scale between the cost bounds (1 = cheapest, 0 = dearest). "linear": 1 - cost /
        high bound, i.e. a penalty proportional to the money spent, the Lagrangian form of "best
        accuracy at a given average cost" (Rank Score depends on the average cost, so this is
        the rule that trades per-request cost against it at a fixed point).
    edge_first : bool
        Threshold family: try edge-tier models before cloud ones (ECVL's "stay on the edge
        unless it is unlikely to reach MES"), then by ``by`` within a tier. Without it the
        cheapest model in ``by`` comes first, which need not be the edge model.
    """

    name: str = "custom"
    cost_weight: float | None = None
    mes: float | None = None
    tau: float | None = None
    by: CostDimension = "usd"
    rcs_weights: tuple[float, float, float] = (0.6, 0.2, 0.2)
    edge_first: bool = False
    cost_axis: Literal["log", "linear"] = "log"

    def __post_init__(self) -> None:
        if (self.cost_weight is None) == (self.tau is None):
            raise ScenarioError(f"Scenario {self.name!r} needs exactly one of cost_weight "
                                "(utility family) or tau (threshold family).")
        if self.by not in DIMENSIONS:
            raise ScenarioError(f"Unknown cost dimension {self.by!r}; expected one of "
                                f"{', '.join(DIMENSIONS)}.")
        if self.tau is not None and not 0.0 <= self.tau <= 1.0:
            raise ScenarioError(f"tau must be in [0, 1], got {self.tau}.")
        if self.mes is not None and not 0.0 < self.mes <= 10.0:
            raise ScenarioError(f"mes must be in (0, 10] (the 0-10 judge scale), got {self.mes}.")
        if self.cost_weight is not None and not (math.isfinite(self.cost_weight)
                                                 and self.cost_weight >= 0):
            raise ScenarioError(f"cost_weight must be a finite number >= 0, got "
                                f"{self.cost_weight}.")
        if self.cost_axis not in ("log", "linear"):
            raise ScenarioError(f"cost_axis must be 'log' or 'linear', got {self.cost_axis!r}.")
        if len(self.rcs_weights) != 3:
            raise ScenarioError("rcs_weights must be three numbers (w_q, w_c, w_l).")

    @property
    def family(self) -> Literal["utility", "threshold"]:
        """"utility" or "threshold"."""
        return "utility" if self.cost_weight is not None else "threshold"

    @property
    def solved_mes(self) -> float:
        """The MES used to count a request as solved."""
        return self.mes if self.mes is not None else DEFAULT_MES

    def spec(self) -> str:
        """The inline form of this scenario (parses back to an equal scenario)."""
        parts = [f"cost_weight={self.cost_weight:g}" if self.family == "utility"
                 else f"tau={self.tau:g}"]
        if self.mes is not None:
            parts.append(f"mes={self.mes:g}")
        parts.append(f"by={self.by}")
        if self.edge_first:
            parts.append("edge_first=1")
        if self.cost_axis != "log":
            parts.append(f"cost_axis={self.cost_axis}")
        if self.rcs_weights != (0.6, 0.2, 0.2):
            parts += [f"{k}={w:g}" for k, w in zip(("w_q", "w_c", "w_l"), self.rcs_weights,
                                                  strict=True)]
        return ",".join(parts)

    def with_params(self, **changes: Any) -> Scenario:
        """A copy with some fields changed (e.g. another tau for a sweep)."""
        return replace(self, **changes)

    def select(self, predictions: FloatArray, costs: FloatArray,
               latencies: FloatArray | None = None, energies: FloatArray | None = None, *,
               bounds: tuple[float, float] | None = None,
               tiers: tuple[str, ...] | None = None) -> IntArray:
        """Choose one model per request.

        Parameters
        ----------
        predictions : (n_samples, n_models) array
            Predicted quality (utility) or P(solved) (threshold) of each model.
        costs, latencies, energies : (n_models,) or (n_samples, n_models) arrays
            Expected USD, seconds and joules per request; the one named by ``by`` is used.
        bounds : (low, high), optional
            Log-scale bounds of the cost dimension for the utility family; default the min
            and max of the given costs.
        tiers : tuple of str, optional
            Each model's tier ("edge" / "cloud"); needed by ``edge_first``.
        """
        preds = np.asarray(predictions, dtype=float)
        if preds.ndim != 2:
            raise ScenarioError(f"predictions must be (n_samples, n_models), got {preds.shape}.")
        cost = self._dimension(costs, latencies, energies, preds.shape)
        if self.family == "utility":
            return self._utility(preds, cost, bounds)
        if self.edge_first:
            if tiers is None or len(tiers) != preds.shape[1]:
                raise ScenarioError(f"Scenario {self.name!r} is edge_first but no tier per "
                                    "model was given.")
            cloud = np.array([t != "edge" for t in tiers], dtype=float)
            # Order key: tier first, then the cost dimension (a cloud model sorts after every
            # edge model whatever its cost).
            span = float(np.nanmax(cost) - np.nanmin(cost)) + 1.0
            cost = np.nan_to_num(cost, nan=np.inf) + cloud * span * 2.0
        return self._threshold(preds, cost)

    def _dimension(self, costs: FloatArray, latencies: FloatArray | None,
                   energies: FloatArray | None, shape: tuple[int, ...]) -> FloatArray:
        pick = {"usd": costs, "latency": latencies, "energy": energies}[self.by]
        if pick is None:
            raise ScenarioError(f"Scenario {self.name!r} orders models by {self.by}, but no "
                                f"{self.by} values were given.")
        arr = np.broadcast_to(np.asarray(pick, dtype=float), shape)
        return arr

    def margins(self, predictions: FloatArray, costs: FloatArray,
                latencies: FloatArray | None = None, energies: FloatArray | None = None, *,
                bounds: tuple[float, float] | None = None) -> FloatArray:
        """How far each request's decision is from flipping: for the utility family the gap
        between the best and the second-best utility; for the threshold family the smallest
        distance of a prediction to tau (and the gap between the two highest predictions,
        which pick the fallback). Models masked out with -inf do not count. Two decision
        paths that compute the same predictions up to rounding agree wherever this is
        larger than the rounding."""
        preds = np.asarray(predictions, dtype=float)
        if self.family == "utility":
            cost = self._dimension(costs, latencies, energies, preds.shape)
            values = self.utility(preds, cost, bounds)
        else:
            values = preds
        finite = np.where(np.isfinite(values), values, -np.inf)
        top = -np.sort(-finite, axis=1)[:, :2]
        gap = (top[:, 0] - top[:, 1]) if preds.shape[1] > 1 else np.full(len(preds), np.inf)
        gap = np.where(np.isfinite(gap), gap, np.inf)
        if self.family == "utility":
            out: FloatArray = gap
            return out
        near = np.abs(np.where(np.isfinite(preds), preds, np.inf) - float(self.tau or 0.0))
        result: FloatArray = np.minimum(gap, near.min(axis=1))
        return result

    def utility(self, preds: FloatArray, cost: FloatArray,
                bounds: tuple[float, float] | None) -> FloatArray:
        """Utility family: predicted quality plus cost_weight times cheapness, per request
        and model (what :meth:`select` takes the argmax of)."""
        low, high = bounds if bounds is not None else (float(np.nanmin(cost)),
                                                       float(np.nanmax(cost)))
        low = max(low, 1e-300)
        span = math.log2(high) - math.log2(low) if high > low else 0.0
        clipped = np.clip(np.nan_to_num(cost, nan=high), low, high)
        if self.cost_axis == "linear":
            cheap = 1.0 - clipped / high
        else:
            cheap = ((math.log2(high) - np.log2(clipped)) / span if span > 0
                     else np.ones_like(cost))
        weight = float(self.cost_weight or 0.0)
        values: FloatArray = np.nan_to_num(preds, nan=-np.inf) + weight * cheap
        return values

    def _utility(self, preds: FloatArray, cost: FloatArray,
                 bounds: tuple[float, float] | None) -> IntArray:
        out: IntArray = np.argmax(self.utility(preds, cost, bounds), axis=1).astype(np.int64)
        return out

    def _threshold(self, preds: FloatArray, cost: FloatArray) -> IntArray:
        order = np.argsort(np.nan_to_num(cost, nan=np.inf), axis=1, kind="stable")
        p_sorted = np.take_along_axis(np.nan_to_num(preds, nan=-np.inf), order, axis=1)
        ok = p_sorted >= float(self.tau or 0.0) - 1e-12
        first = np.argmax(ok, axis=1)
        cheapest_ok = order[np.arange(len(order)), first]
        fallback = np.argmax(np.nan_to_num(preds, nan=-np.inf), axis=1)
        out: IntArray = np.where(ok.any(axis=1), cheapest_ok, fallback).astype(np.int64)
        return out


PRESETS: dict[str, Scenario] = {
    "fast": Scenario("fast", mes=6, tau=0.6, by="latency", rcs_weights=(0.3, 0.2, 0.5)),
    "quality": Scenario("quality", mes=8, tau=0.8, by="usd", rcs_weights=(0.6, 0.2, 0.2)),
    "eco": Scenario("eco", mes=5, tau=0.5, by="energy", rcs_weights=(0.3, 0.5, 0.2)),
}
_KEYS = ("cost_weight", "mes", "tau", "by", "name", "w_q", "w_c", "w_l", "edge_first",
         "cost_axis")
#: the gateway's name for "the serving bundle's router with the scenario it was tuned to on
#: dev" (``vlroute/auto``); without a bundle it is the ``quality`` preset on backend priors
AUTO = "auto"
#: evaluation-only scenario: each learned router takes the cost_weight (and cost axis) with the
#: best Rank Score on the dev split (baselines, which ignore cost_weight, decide as always)
TUNED = "cost_weight@dev"


def parse_scenario(spec: str) -> Scenario:
    """A preset name, an inline spec, or a preset with overrides ("fast,tau=0.7").

    A ``vlroute/`` prefix (the gateway's model field) is accepted.
    """
    text = spec.strip().removeprefix("vlroute/")
    if text == TUNED:
        return Scenario(TUNED, cost_weight=0.0)
    if not text:
        raise ScenarioError("Empty scenario spec; use a preset (fast, quality, eco) or "
                            "key=value pairs such as 'mes=6,tau=0.7,by=latency'.")
    parts = [p.strip() for p in text.split(",") if p.strip()]
    base: dict[str, Any] = {}
    if "=" not in parts[0]:
        if parts[0] not in PRESETS:
            raise ScenarioError(f"Unknown scenario preset {parts[0]!r}; presets: "
                                f"{', '.join(PRESETS)}.")
        preset = PRESETS[parts[0]]
        base = {"name": preset.name, "mes": preset.mes, "tau": preset.tau, "by": preset.by,
                "rcs_weights": preset.rcs_weights}
        parts = parts[1:]
    overrides = dict(_pair(p, spec) for p in parts)
    if "cost_weight" in overrides:
        base.pop("tau", None)
    weights = list(base.get("rcs_weights", (0.6, 0.2, 0.2)))
    for k, key in enumerate(("w_q", "w_c", "w_l")):
        if key in overrides:
            weights[k] = overrides.pop(key)
    base.update(overrides)
    base["rcs_weights"] = tuple(weights)
    if parts or "name" not in base:
        base["name"] = overrides.get("name", text)
    return Scenario(**base)


def _pair(part: str, spec: str) -> tuple[str, Any]:
    key, sep, value = (s.strip() for s in part.partition("="))
    if not sep or key not in _KEYS:
        raise ScenarioError(f"Cannot parse {part!r} in scenario {spec!r}; expected key=value "
                            f"with key in {', '.join(_KEYS)}.")
    if key in ("by", "name", "cost_axis"):
        return key, value
    if key == "edge_first":
        if value not in ("0", "1", "true", "false"):
            raise ScenarioError(f"edge_first must be 0/1 or true/false in scenario {spec!r}.")
        return key, value in ("1", "true")
    try:
        return key, float(value)
    except ValueError:
        raise ScenarioError(f"{key} must be a number in scenario {spec!r}, got "
                            f"{value!r}.") from None
