from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vlroute.metrics import (
    ail,
    apsp,
    avg_acc,
    avg_cost_per_10k,
    cost_advantage,
    cost_bounds,
    edge_share,
    gap_closed,
    oracle_decisions,
    pareto_area,
    pareto_frontier,
    rank_score,
    rcs,
)
from vlroute.scenarios import Scenario

C_MIN, C_MAX = 0.143, 10.68


@pytest.mark.parametrize(("acc", "cost", "expected"), [
    (0.9560, 0.37, 93.68),   # Oracle row of VL-RouterBench
    (0.7801, 2.72, 68.88),   # Strongest single model
    (0.7749, 1.13, 74.23),   # MLP, lambda = 100
])
def test_rank_score_reproduces_the_paper_rows(acc: float, cost: float, expected: float) -> None:
    assert rank_score(acc, cost, c_min=C_MIN, c_max=C_MAX) == pytest.approx(expected, abs=0.05)


def test_rank_score_extremes_and_bad_bounds() -> None:
    assert rank_score(1.0, C_MIN, c_min=C_MIN, c_max=C_MAX) == pytest.approx(100.0)
    assert rank_score(1.0, C_MAX, c_min=C_MIN, c_max=C_MAX) == pytest.approx(0.0)
    assert rank_score(0.0, C_MIN, c_min=C_MIN, c_max=C_MAX) == pytest.approx(0.0)
    assert math.isnan(rank_score(math.nan, 1.0, c_min=C_MIN, c_max=C_MAX))
    with pytest.raises(ValueError, match="c_min"):
        rank_score(0.5, 1.0, c_min=0.0, c_max=1.0)


@given(acc=st.floats(-1, 2), cost=st.floats(1e-6, 1e3),
       lo=st.floats(1e-4, 10), span=st.floats(1.0, 1e3))
def test_rank_score_is_within_0_and_100(acc: float, cost: float, lo: float, span: float) -> None:
    assert 0.0 <= rank_score(acc, cost, c_min=lo, c_max=lo * span) <= 100.0


matrices = arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 5)),
                  elements=st.sampled_from([0.0, 0.25, 0.5, 1.0]))


@settings(max_examples=60)
@given(quality=matrices, seed=st.integers(0, 1000))
def test_oracle_quality_is_at_least_any_routers(quality: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cost = rng.uniform(0.1, 1.0, size=quality.shape)
    oracle = avg_acc(oracle_decisions(quality, cost), quality)
    other = rng.integers(0, quality.shape[1], size=quality.shape[0])
    assert oracle >= avg_acc(other, quality) - 1e-12


@settings(max_examples=60)
@given(quality=matrices, seed=st.integers(0, 1000))
def test_routed_cost_is_non_increasing_in_cost_weight(quality: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    per_model = rng.uniform(0.01, 5.0, size=quality.shape[1])
    predictions = rng.uniform(0, 1, size=quality.shape)
    costs = [per_model[Scenario(cost_weight=w).select(predictions, per_model)].mean()
             for w in (0.0, 0.05, 0.2, 0.5, 1.0, 3.0, 100.0)]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(costs))


def test_oracle_prefers_the_cheapest_correct_model_else_the_cheapest() -> None:
    quality = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 1.0]])
    cost = np.array([[3, 1, 2], [3, 1, 2], [1, 5, 4.0]])
    assert oracle_decisions(quality, cost).tolist() == [1, 1, 2]


def test_basic_metrics_by_hand() -> None:
    quality = np.array([[1, 0], [0, 1], [1, 1.0]])
    cost = np.array([[1e-4, 2e-4]] * 3)
    decisions = np.array([0, 0, 1])
    assert avg_acc(decisions, quality) == pytest.approx(2 / 3)
    assert avg_cost_per_10k(decisions, cost) == pytest.approx((1 + 1 + 2) / 3)
    assert cost_bounds(cost) == pytest.approx((1e-4, 2e-4))
    assert gap_closed(60, 50, 70) == pytest.approx(0.5)
    assert gap_closed(60, 70, 70) is None


def test_ecvl_metrics_by_hand_and_rcs_of_the_reference() -> None:
    quality = np.array([[0.5, 1.0], [0.9, 0.6], [0.2, 0.8]])   # graded, 0-10 = 10 q
    latency = np.array([[1.0, 3.0]] * 3)
    cost = np.array([[1.0, 4.0]] * 3)
    decisions = np.array([0, 0, 1])
    assert apsp(decisions, quality, mes=6) == pytest.approx(2 / 3)   # 5 < 6, 9 >= 6, 8 >= 6
    assert cost_advantage(decisions, cost, reference=1) == pytest.approx(1 - 6 / 12)
    assert ail(decisions, latency) == pytest.approx(5 / 3)
    assert edge_share(decisions, ("edge", "cloud")) == pytest.approx(2 / 3)
    ref = np.ones(3, dtype=np.int64)
    weights = (0.6, 0.2, 0.2)
    value = rcs(apsp(ref, quality, 6), cost_advantage(ref, cost, 1), ail(ref, latency),
                apsp_ref=apsp(ref, quality, 6), ail_ref=ail(ref, latency), weights=weights)
    assert value == pytest.approx(0.6)


def test_pareto_frontier_and_area() -> None:
    costs, accs = [1.0, 2.0, 4.0, 3.0], [0.5, 0.4, 0.9, 0.7]
    assert pareto_frontier(costs, accs).tolist() == [0, 3, 2]
    # log2 scale from 1 to 4: x = 0, 0.79, 1 -> 0.5 * 0.79 + 0.7 * 0.21 + 0.9 * 0
    expected = 0.5 * math.log2(3) / 2 + 0.7 * (1 - math.log2(3) / 2)
    assert pareto_area(costs, accs, c_min=1.0, c_max=4.0) == pytest.approx(expected)
    assert 0 <= pareto_area(costs, accs, c_min=1.0, c_max=4.0) <= 1
