"""Out-of-fold routers (stack, calibrated), the calibration error, IRT and adding a model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_baselines import matrices
from test_routers_learned import BOUNDS, learnable

from vlroute.metrics import expected_calibration_error
from vlroute.routers import make_router
from vlroute.routers.extend import NotExtensibleError, add_model
from vlroute.routers.persistence import load_router, save_router
from vlroute.routers.stacking import grouped_folds, soft_logistic
from vlroute.scenarios import Scenario

COSTS = np.array([1e-4, 4e-4, 4e-3])


def test_grouped_folds_keep_groups_together_and_use_every_fold() -> None:
    groups = np.repeat([f"q{i}" for i in range(23)], 3)
    fold = grouped_folds(groups, 5)
    assert set(fold.tolist()) == set(range(5))
    for g in np.unique(groups):
        assert len(set(fold[groups == g].tolist())) == 1
    assert (grouped_folds(groups, 5) == fold).all()          # seeded
    assert set(grouped_folds(groups[:6], 5).tolist()) == {0, 1}   # fewer groups than folds


def test_expected_calibration_error() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(20000, 2))
    y = (rng.uniform(size=p.shape) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.02                 # calibrated
    assert expected_calibration_error(np.clip(p * 1.6, 0, 1), y) > 0.15   # overconfident
    y[0, 0] = np.nan                                               # missing pairs are skipped
    assert np.isfinite(expected_calibration_error(p, y))
    assert np.isnan(expected_calibration_error(np.array([[0.5]]), np.array([[np.nan]])))
    with pytest.raises(ValueError, match="same"):
        expected_calibration_error(p, y[:10])


def test_soft_logistic_recovers_a_known_model_and_its_prior() -> None:
    rng = np.random.default_rng(1)
    F = rng.normal(size=(5000, 2))
    y = (rng.uniform(size=5000) < 1 / (1 + np.exp(-(F @ [2.0, -1.0] + 0.5)))).astype(float)
    w, c = soft_logistic(F, y, 0.0)
    assert np.allclose(w, [2.0, -1.0], atol=0.15) and abs(c - 0.5) < 0.1
    w_strong, _ = soft_logistic(F[:20], y[:20], 1e6, prior=np.array([3.0, 3.0]))
    assert np.allclose(w_strong, [3.0, 3.0], atol=0.05)           # the prior wins


def _shrunk_prior_set(n_per_task: int = 40, seed: int = 0) -> tuple[np.ndarray, object]:
    """Two tasks the features tell apart; model 0 solves task a, fails task b. The task prior's
    smoothing (20 pseudo-counts) shrinks both rates towards 0.5: under-confident."""
    rng = np.random.default_rng(seed)
    tasks = ["a"] * n_per_task + ["b"] * n_per_task
    X = rng.normal(size=(2 * n_per_task, 4)) * 0.2
    X[:, 0] += np.where(np.array(tasks) == "a", 3.0, -3.0)
    solved = (np.array(tasks) == "a") ^ (rng.uniform(size=len(tasks)) < 0.05)
    quality = np.stack([solved, np.ones(len(tasks), bool), ~solved], 1).astype(float)
    return X, matrices(quality, COSTS, tasks=tasks)


def test_isotonic_calibration_out_of_fold_fixes_an_underconfident_router() -> None:
    X, m = _shrunk_prior_set()
    X_test, m_test = _shrunk_prior_set(seed=1)
    base = make_router("prior").fit(m, bounds=BOUNDS, X=X)
    before = expected_calibration_error(base.predict_quality(X_test), m_test.quality)
    for method in ("isotonic", "platt"):
        calibrated = make_router("calibrated", base="prior", method=method, folds=4).fit(
            m, bounds=BOUNDS, X=X)
        after = expected_calibration_error(calibrated.predict_quality(X_test), m_test.quality)
        assert before > 0.15 and after < before / 3, (method, before, after)


def test_stack_trusts_the_member_that_knows() -> None:
    X, m = learnable()
    noisy_tasks = replace(m, tasks=np.array([f"t{i % 3}" for i in range(m.n_samples)],
                                            dtype=object))
    stack = make_router("stack", members="knn,prior", folds=4).fit(noisy_tasks, bounds=BOUNDS,
                                                                   X=X)
    w = stack.state_["w"]
    assert (w[:2, 0] > w[:2, 1]).all()        # knn over the uninformative task prior
    X_new, m_new = learnable(seed=3)
    p = stack.predict_quality(X_new)
    assert ((p[:, 0] > 0.5) == (m_new.quality[:, 0] > 0.5)).mean() > 0.95
    with pytest.raises(ValueError, match="comma-separated list"):
        make_router("stack", members="knn,nope").fit(m, bounds=BOUNDS, X=X)


@pytest.mark.parametrize("name", ["irt", "mf"])
def test_add_model_from_a_few_samples(name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    X, m = learnable(n=400)
    # the new model (column 1) solves cluster 1 only: nothing the other three do alone
    old = m.select_models(["m0", "m2", "m3"])
    router = make_router(name, candidates="all").fit(old, bounds=BOUNDS, X=X)
    few = np.arange(50)
    new = add_model(router, "m1", X[few], m.quality[few, 1], tier="cloud",
                    mean_cost={"usd": 4e-4, "latency": 4e-3, "energy": 4e-2})
    assert new.models_ == ("m0", "m2", "m3", "m1") and router.models_ == ("m0", "m2", "m3")
    X_new, m_new = learnable(n=200, seed=7)
    p = new.predict_quality(X_new)
    assert ((p[:, 3] > 0.5) == (m_new.quality[:, 1] > 0.5)).mean() > 0.9
    assert np.allclose(p[:, :3], router.predict_quality(X_new))     # the others are frozen
    full = m_new.select_models(["m0", "m2", "m3", "m1"])
    chosen = new.route(full, Scenario(cost_weight=0.3, by="usd"), X_new)
    assert (chosen == 3).any()                   # the new model is chosen where it pays
    save_router(new, tmp_path / "a")
    again = load_router(tmp_path / "a")
    assert np.allclose(again.predict_quality(X_new), p)
    with pytest.raises(ValueError, match="already"):
        add_model(router, "m0", X[few], m.quality[few, 0], tier="edge",
                  mean_cost={"usd": 1, "latency": 1, "energy": 1})
    with pytest.raises(ValueError, match="one row of features"):
        add_model(router, "m9", X[:3], m.quality[:5, 0], tier="edge",
                  mean_cost={"usd": 1, "latency": 1, "energy": 1})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        add_model(router, "m9", X[:3], np.array([0, 2.0, 1]), tier="edge",
                  mean_cost={"usd": 1, "latency": 1, "energy": 1})


def test_a_few_labels_all_correct_mean_good_not_certain() -> None:
    X, m = learnable(n=400)
    router = make_router("irt", candidates="all").fit(m.select_models(["m0", "m2", "m3"]),
                                                      bounds=BOUNDS, X=X)
    costs = {"usd": 1e-4, "latency": 1.0, "energy": 1.0}
    new = add_model(router, "lucky", X[:5], np.ones(5), tier="edge", mean_cost=costs)
    p = new.predict_quality(X)[:, 3]
    assert p.mean() < 0.97 and p.min() < 0.9            # the bias is pulled to the others'
    with pytest.raises(ValueError, match="0 or 1 too"):
        add_model(router, "graded", X[:5], np.full(5, 0.5), tier="edge", mean_cost=costs)


def test_add_model_refuses_routers_without_model_weights() -> None:
    X, m = learnable()
    knn = make_router("knn").fit(m, bounds=BOUNDS, X=X)
    with pytest.raises(NotExtensibleError, match="irt and mf"):
        add_model(knn, "new", X[:10], m.quality[:10, 0], tier="edge",
                  mean_cost={"usd": 1, "latency": 1, "energy": 1})
