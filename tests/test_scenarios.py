from __future__ import annotations

import numpy as np
import pytest

from vlroute.errors import ScenarioError
from vlroute.scenarios import PRESETS, Scenario, parse_scenario


def test_presets_follow_the_design_table() -> None:
    fast, quality, eco = PRESETS["fast"], PRESETS["quality"], PRESETS["eco"]
    assert (fast.mes, fast.tau, fast.by, fast.rcs_weights) == (6, 0.6, "latency", (0.3, 0.2, 0.5))
    assert (quality.mes, quality.tau, quality.by) == (8, 0.8, "usd")
    assert (eco.mes, eco.tau, eco.by, eco.rcs_weights) == (5, 0.5, "energy", (0.3, 0.5, 0.2))
    assert all(s.family == "threshold" for s in PRESETS.values())


@pytest.mark.parametrize("spec", ["fast", "vlroute/eco", "cost_weight=0.3",
                                  "mes=6,tau=0.7,by=latency", "fast,tau=0.7", "quality,w_q=0.5",
                                  "cost_weight=0.5,cost_axis=linear"])
def test_inline_specs_round_trip(spec: str) -> None:
    scenario = parse_scenario(spec)
    again = parse_scenario(scenario.spec())
    fields = ("cost_weight", "mes", "tau", "by", "rcs_weights", "cost_axis")
    assert [getattr(scenario, f) for f in fields] == [getattr(again, f) for f in fields]


def test_preset_overrides_apply() -> None:
    s = parse_scenario("fast,tau=0.7")
    assert (s.tau, s.mes, s.by) == (0.7, 6, "latency")
    assert parse_scenario("quality,cost_weight=0.2").family == "utility"


@pytest.mark.parametrize(("spec", "message"), [
    ("turbo", "Unknown scenario preset 'turbo'"),
    ("mes=6", "exactly one of cost_weight"),
    ("tau=2", "tau must be in"),
    ("tau=0.5,by=carbon", "Unknown cost dimension"),
    ("tau=x", "tau must be a number"),
    ("color=red", "expected key=value"),
    ("cost_weight=1,cost_axis=cubic", "cost_axis must be"),
    ("", "Empty scenario"),
])
def test_bad_specs_say_what_is_allowed(spec: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(spec)


def test_threshold_takes_the_cheapest_confident_model_else_the_most_likely() -> None:
    p_solved = np.array([[0.9, 0.95, 0.99], [0.3, 0.85, 0.99], [0.1, 0.2, 0.3]])
    latency = np.array([1.0, 2.0, 5.0])
    scenario = Scenario(tau=0.8, by="latency")
    assert scenario.select(p_solved, np.zeros(3), latency).tolist() == [0, 1, 2]
    with pytest.raises(ScenarioError, match="no energy values"):
        Scenario(tau=0.5, by="energy").select(p_solved, np.ones(3), latency)


def test_linear_cost_axis_penalises_money_not_its_logarithm() -> None:
    # cheap-but-weak, mid, dear-but-best at 1, 2 and 40 $: on the log axis the step from 1 to 2
    # costs as much cheapness as the step from 2 to 4; on the linear axis it is almost free
    quality = np.array([[0.50, 0.58, 0.70]])
    cost = np.array([1.0, 2.0, 40.0])
    assert Scenario(cost_weight=0.5).select(quality, cost).tolist() == [0]
    assert Scenario(cost_weight=0.5, cost_axis="linear").select(quality, cost).tolist() == [1]


def test_utility_extremes() -> None:
    quality = np.array([[0.2, 0.5, 0.9]])
    cost = np.array([1.0, 2.0, 8.0])
    assert Scenario(cost_weight=0.0).select(quality, cost).tolist() == [2]
    assert Scenario(cost_weight=100.0).select(quality, cost).tolist() == [0]
    per_sample = np.array([[8.0, 2.0, 1.0]])
    assert Scenario(cost_weight=100.0).select(quality, per_sample).tolist() == [2]


def test_edge_first_tries_the_edge_model_before_a_cheaper_cloud_model() -> None:
    p_solved = np.array([[0.9, 0.95], [0.3, 0.95]])
    usd = np.array([2.64, 2.63])                  # the cloud model is (slightly) cheaper
    tiers = ("edge", "cloud")
    plain = Scenario(tau=0.8)
    first = parse_scenario("tau=0.8,edge_first=1")
    assert plain.select(p_solved, usd, tiers=tiers).tolist() == [1, 1]
    assert first.select(p_solved, usd, tiers=tiers).tolist() == [0, 1]
    assert parse_scenario(first.spec()).edge_first
    with pytest.raises(ScenarioError, match="no tier per model"):
        first.select(p_solved, usd)
    with pytest.raises(ScenarioError, match="edge_first must be"):
        parse_scenario("tau=0.5,edge_first=maybe")
