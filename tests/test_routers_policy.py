"""Conformance suite of the policy routers (trained for one trade-off), and their labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_baselines import matrices
from test_routers_learned import BOUNDS, learnable

from vlroute.errors import NotFittedError, ScenarioMismatchError
from vlroute.metrics import avg_acc
from vlroute.routers import POLICY, make_router
from vlroute.routers.labels import LABEL_LAMBDAS, soft_targets
from vlroute.routers.neighbours import copeland_wins
from vlroute.scenarios import Scenario

AS_TRAINED = Scenario(cost_weight=0.0)
CHEAPEST_CORRECT = {"linear_soft": {"label_lambda": math.inf},
                    "mlp_soft": {"label_lambda": math.inf},
                    "prototype": {"label_lambda": math.inf}}


@pytest.fixture(params=POLICY)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fitted(name: str):  # type: ignore[no-untyped-def]
    X, m = learnable()
    router = make_router(name, **CHEAPEST_CORRECT.get(name, {}))
    return router.fit(m, bounds=BOUNDS, X=X), X, m


def test_soft_targets_follow_the_formula() -> None:
    q = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0.5, 1.0, np.nan]])
    c = np.array([1e-4, 2e-4, 1e-3])
    t0, keep = soft_targets(q, c, 0.0, 100.0)
    assert keep.tolist() == [True, False, True, True]
    assert np.allclose(t0[0], [0.5, 0, 0.5]) and np.allclose(t0[1], [1 / 3] * 3)
    assert np.allclose(t0[2], [1 / 3, 2 / 3, 0])                   # graded: by score
    t, _ = soft_targets(q, c, 1000.0, 100.0)
    g = np.exp(-100 * 1000 * c)
    assert np.allclose(t[1], g / g.sum()) and np.allclose(t.sum(1), 1)
    hard, _ = soft_targets(q, c, math.inf, 100.0)
    assert hard.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0]]     # cheapest best
    assert LABEL_LAMBDAS == (0, 10, 100, 1000, 10000, math.inf)
    with pytest.raises(ValueError, match="label_lambda"):
        soft_targets(q, c, -1.0, 1.0)


def test_copeland_wins_break_ties_by_cost() -> None:
    wins = copeland_wins(np.array([[1.0, 1.0, 0.0]]), np.array([[2.0, 1.0, 0.5]]))
    assert wins.tolist() == [[1, 2, 0]]


def test_fit_returns_self_and_keeps_parameters(name: str) -> None:
    X, m = learnable()
    router = make_router(name)
    before = dict(vars(router))
    assert router.fit(m, bounds=BOUNDS, X=X) is router
    assert {k: v for k, v in vars(router).items() if k in before} == before


def test_not_fitted_and_feature_checks(name: str) -> None:
    X, m = learnable()
    with pytest.raises(NotFittedError):
        make_router(name).route(m, AS_TRAINED, X)
    with pytest.raises(ValueError, match="needs request features"):
        make_router(name).fit(m, bounds=BOUNDS)
    router = make_router(name).fit(m, bounds=BOUNDS, X=X)
    with pytest.raises(ValueError, match="features"):
        router.route(m, AS_TRAINED, X[:, :3])


def test_policy_shape_determinism_and_permutation(name: str) -> None:
    router, X, _ = fitted(name)
    p = router.predict_policy(X)
    assert p.shape == (len(X), 4) and not np.isnan(p).any()
    again, _, _ = fitted(name)
    assert np.allclose(p, again.predict_policy(X))
    perm = np.random.default_rng(1).permutation(len(X))
    assert np.allclose(router.predict_policy(X[perm]), p[perm])


def test_learns_the_cheapest_correct_model(name: str) -> None:
    router, _, _ = fitted(name)
    X, m = learnable(seed=5)
    decisions = router.route(m, AS_TRAINED, X)
    assert avg_acc(decisions, m.quality) > 0.9
    assert (decisions != 2).mean() > 0.8            # the dear always-right model is rarely needed


def test_other_scenarios_are_refused_clearly(name: str) -> None:
    router, X, m = fitted(name)
    for scenario in (Scenario(tau=0.5), Scenario(cost_weight=0.3)):
        with pytest.raises(ScenarioMismatchError, match="policy router"):
            router.route(m, scenario, X)


def test_label_lambda_moves_along_the_cost_axis() -> None:
    X, m = learnable()
    costs = []
    for lam in (0.0, math.inf):
        router = make_router("mlp_soft", label_lambda=lam).fit(m, bounds=BOUNDS, X=X)
        chosen = router.route(m, AS_TRAINED, X)
        costs.append(m.cost[np.arange(len(X)), chosen].mean())
    assert costs[1] < costs[0]


def test_artifacts_round_trip(name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vlroute.routers.persistence import load_router, save_router

    X, m = learnable()
    graded = matrices(m.quality * 0.75, np.array([1e-4, 4e-4, 4e-3, 2e-4]))
    for data in (m, graded):
        router = make_router(name).fit(data, bounds=BOUNDS, X=X)
        save_router(router, tmp_path / "art", feature_spec={"dim": 6}, overwrite=True)
        loaded = load_router(tmp_path / "art", feature_spec={"dim": 6})
        assert (loaded.route(data, AS_TRAINED, X) == router.route(data, AS_TRAINED, X)).all()
