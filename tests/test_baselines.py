from __future__ import annotations

import numpy as np
import pytest

from vlroute.data.matrices import RoutingMatrices
from vlroute.errors import NotFittedError, UnknownComponentError
from vlroute.routers import BASELINES, make_router
from vlroute.scenarios import PRESETS, Scenario

QUALITY = Scenario(cost_weight=0.0)


def matrices(quality: np.ndarray, cost: np.ndarray, datasets=None, tasks=None,
             latency=None) -> RoutingMatrices:
    n, m = quality.shape
    cost = np.broadcast_to(cost, (n, m)).astype(float)
    latency = cost * 10 if latency is None else np.broadcast_to(latency, (n, m)).astype(float)
    return RoutingMatrices(
        sample_ids=np.array([f"s{i}" for i in range(n)], dtype=object),
        models=tuple(f"m{k}" for k in range(m)), quality=quality.astype(float), cost=cost,
        latency=latency, energy=cost * 100, tokens_in=np.ones((n, m)),
        tokens_out=np.ones((n, m)), groups=np.array([f"g{i}" for i in range(n)], dtype=object),
        datasets=np.array(datasets or ["D"] * n, dtype=object),
        tasks=np.array(tasks or ["t"] * n, dtype=object),
        splits=np.array(["train"] * n, dtype=object), tiers=("edge",) + ("cloud",) * (m - 1))


def test_every_baseline_routes_within_range_and_needs_fit() -> None:
    rng = np.random.default_rng(0)
    m = matrices(rng.integers(0, 2, size=(30, 4)).astype(float),
                 np.array([1e-4, 5e-4, 1e-3, 2e-3]))
    for name in BASELINES:
        with pytest.raises(NotFittedError):
            make_router(name).route(m, QUALITY)
        decisions = make_router(name).fit(m, bounds=(1e-4, 2e-3)).route(m, QUALITY)
        assert decisions.shape == (30,) and decisions.min() >= 0 and decisions.max() < 4


def test_baselines_by_hand() -> None:
    # m0 cheap and weak, m1 mid, m2 strongest and dearest
    quality = np.array([[0, 1, 1], [0, 0, 1], [1, 1, 1], [0, 1, 1.0]])
    cost = np.array([1e-4, 3e-4, 3e-3])
    m = matrices(quality, cost, latency=np.array([5.0, 1.0, 2.0]))
    bounds = (1e-4, 3e-3)
    fit = {name: make_router(name).fit(m, bounds=bounds) for name in BASELINES}
    assert fit["strongest_global"].route(m, QUALITY).tolist() == [2] * 4
    assert fit["cheapest_global"].route(m, QUALITY).tolist() == [0] * 4
    assert fit["cheapest_global"].route(m, PRESETS["fast"]).tolist() == [1] * 4  # by latency
    assert fit["best_single_by_rank"].route(m, QUALITY).tolist() == [1] * 4
    assert fit["oracle"].route(m, QUALITY).tolist() == [1, 2, 0, 1]
    random_a = make_router("random").fit(m, bounds=bounds).route(m, QUALITY)
    assert (random_a == fit["random"].route(m, QUALITY)).all()


def test_strongest_per_dataset_uses_task_for_a_single_dataset() -> None:
    quality = np.array([[1, 0], [1, 0], [0, 1], [0, 1.0]])
    m = matrices(quality, np.array([1e-4, 2e-4]), tasks=["a", "a", "b", "b"])
    router = make_router("strongest_per_dataset").fit(m, bounds=(1e-4, 2e-4))
    assert router.by_ == "task"
    assert router.route(m, QUALITY).tolist() == [0, 0, 1, 1]
    two = matrices(quality, np.array([1e-4, 2e-4]), datasets=["X", "X", "Y", "Y"])
    assert make_router("strongest_per_dataset").fit(two, bounds=(1e-4, 2e-4)).by_ == "dataset"


def test_single_and_unknown_router_names() -> None:
    m = matrices(np.ones((2, 2)), np.array([1e-4, 2e-4]))
    assert make_router("single:m1").fit(m, bounds=(1e-4, 2e-4)).route(m, QUALITY).tolist() == \
        [1, 1]
    with pytest.raises(UnknownComponentError, match="Did you mean: oracle"):
        make_router("oracel")
