"""Conformance suite run over every registered learned router, plus behaviour checks."""

from __future__ import annotations

import numpy as np
import pytest
from test_baselines import matrices

from vlroute.errors import NotFittedError
from vlroute.metrics import avg_acc
from vlroute.routers import QUALITY, make_router
from vlroute.scenarios import Scenario

BOUNDS = (1e-4, 4e-3)


def learnable(n: int = 240, seed: int = 0) -> tuple[np.ndarray, object]:
    """Two clusters: the cheap model solves cluster 0, the mid model cluster 1, the dear model
    both; a fourth model is always wrong."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, 6)) * 0.3
    X[:, 0] += np.where(cluster == 0, 2.0, -2.0)
    quality = np.stack([cluster == 0, cluster == 1, np.ones(n, bool), np.zeros(n, bool)],
                       axis=1).astype(float)
    return X, matrices(quality, np.array([1e-4, 4e-4, 4e-3, 2e-4]))


#: the task prior learns P(task | x), not each model's quality from x: the synthetic tasks
#: here carry no signal, so it is tested on real data in test_auto.py instead
FROM_FEATURES = tuple(n for n in QUALITY if n != "prior")


@pytest.fixture(params=FROM_FEATURES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fitted(name: str, **params: object):  # type: ignore[no-untyped-def]
    X, m = learnable()
    return make_router(name, candidates="all", **params).fit(m, bounds=BOUNDS, X=X), X, m


def test_fit_returns_self_and_keeps_parameters(name: str) -> None:
    X, m = learnable()
    router = make_router(name)
    before = dict(vars(router))
    assert router.fit(m, bounds=BOUNDS, X=X) is router
    assert {k: v for k, v in vars(router).items() if k in before} == before


def test_not_fitted_and_feature_checks(name: str) -> None:
    X, m = learnable()
    with pytest.raises(NotFittedError):
        make_router(name).route(m, Scenario(cost_weight=0.0), X)
    with pytest.raises(ValueError, match="needs request features"):
        make_router(name).fit(m, bounds=BOUNDS)
    router = make_router(name).fit(m, bounds=BOUNDS, X=X)
    with pytest.raises(ValueError, match="features"):
        router.route(m, Scenario(cost_weight=0.0), X[:, :3])


def test_predictions_shape_range_determinism_and_permutation(name: str) -> None:
    router, X, _ = fitted(name)
    p = router.predict_quality(X)
    assert p.shape == (len(X), 4) and np.isfinite(p).all() and (0 <= p).all() and (p <= 1).all()
    again, _, _ = fitted(name)
    assert np.allclose(p, again.predict_quality(X))
    perm = np.random.default_rng(1).permutation(len(X))
    assert np.allclose(router.predict_quality(X[perm]), p[perm])


def test_beats_random_and_obeys_cost_weight_extremes(name: str) -> None:
    router, _, _ = fitted(name)
    X, m = learnable(seed=5)
    decisions = router.route(m, Scenario(cost_weight=0.0), X)
    rng = np.random.default_rng(0)
    assert avg_acc(decisions, m.quality) > avg_acc(rng.integers(0, 4, len(X)), m.quality) + 0.2
    assert avg_acc(decisions, m.quality) > 0.9
    assert (router.route(m, Scenario(cost_weight=1e6), X) == 0).all()     # the cheapest
    p = router.predict_quality(X)
    assert (decisions == np.argmax(p, axis=1)).mean() > 0.99


def test_threshold_scenarios_and_graded_labels(name: str) -> None:
    router, X, m = fitted(name)
    chosen = router.route(m, Scenario(tau=0.5, by="usd"), X)
    assert avg_acc(chosen, m.quality) > 0.9 and (chosen != 2).mean() > 0.8  # cheap when sure
    graded = m.quality * 0.5 + 0.5 * (m.quality > 0) * np.linspace(0, 1, len(X))[:, None]
    gm = matrices(graded, np.array([1e-4, 4e-4, 4e-3, 2e-4]))
    grouter = make_router(name, candidates="all").fit(gm, bounds=BOUNDS, X=X)
    p6 = grouter.predict_solved(X, 6.0)
    assert p6.shape == (len(X), 4) and (0 <= p6).all() and (p6 <= 1).all()
    assert not np.allclose(p6, grouter.predict_quality(X))


def test_pareto_candidates_never_pick_a_dominated_model() -> None:
    X, m = learnable()
    router = make_router("knn", candidates="pareto").fit(m, bounds=BOUNDS, X=X)
    assert not router.allowed_[3]            # always wrong: dominated
    assert 3 not in set(router.route(m, Scenario(cost_weight=0.0), X).tolist())


def test_artifacts_round_trip_and_refuse_other_features(name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vlroute.routers.persistence import IncompatibleArtifactError, load_router, save_router

    graded_quality = learnable()[1].quality * 0.75
    X, m = learnable()
    gm = matrices(graded_quality, np.array([1e-4, 4e-4, 4e-3, 2e-4]))
    for data in (m, gm):
        router = make_router(name).fit(data, bounds=BOUNDS, X=X)
        save_router(router, tmp_path / "art", feature_spec={"dim": 6}, overwrite=True)
        assert not list(tmp_path.glob("*.pkl")) and (tmp_path / "art" / "router.json").is_file()
        loaded = load_router(tmp_path / "art", feature_spec={"dim": 6})
        for scenario in (Scenario(cost_weight=0.05), Scenario(tau=0.7, mes=6)):
            assert (loaded.route(data, scenario, X) == router.route(data, scenario, X)).all()
    with pytest.raises(IncompatibleArtifactError, match="trained on features"):
        load_router(tmp_path / "art", feature_spec={"dim": 7})


def test_baselines_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vlroute.routers import BASELINES
    from vlroute.routers.persistence import load_router, save_router

    _, m = learnable()
    for name in BASELINES:
        router = make_router(name).fit(m, bounds=BOUNDS)
        save_router(router, tmp_path / name)
        assert (load_router(tmp_path / name).route(m, Scenario(tau=0.5)) ==
                router.route(m, Scenario(tau=0.5))).all()


def test_throughput_harness_times_every_router_the_same_way() -> None:
    from vlroute.evaluation.throughput import TimingPlan, measure

    X, m = learnable()
    for name in ("knn", "best_single_by_rank"):
        router = make_router(name).fit(m, bounds=BOUNDS, X=X)
        calls: list[int] = []

        def featurize(rows: np.ndarray, calls: list[int] = calls) -> np.ndarray:
            calls.append(len(rows))
            return X[rows]

        rows = measure(router, m, Scenario(cost_weight=0.0), X=X, featurize=featurize,
                       plan=TimingPlan(batches=(1, 8), warmup=2, runs=3))
        expected = 4 if router.needs_features else 2
        assert [r["batch"] for r in rows] == [1, 8, 1, 8][:expected]
        assert all(r["ms_p50"] > 0 and r["requests_per_s"] > 0 for r in rows)
        # routed prompt tokens per second: one prompt token per request here
        assert all(r["prompt_ktokens_per_s"] == pytest.approx(r["requests_per_s"] / 1e3)
                   for r in rows)
        assert calls == ([1] * 5 + [8] * 5 if router.needs_features else [])


@pytest.mark.parametrize(("target", "family"), [
    ("edge_share>=0.45", "tau=0.5"), ("cost_per_request<=0.0005", "cost_weight=0"),
    ("apsp_drop<=0.05", "tau=0.5")])
def test_calibration_meets_the_target_on_dev(target: str, family: str) -> None:
    from vlroute.evaluation.calibrate import Target, calibrate
    from vlroute.scenarios import parse_scenario

    X, m = learnable()
    router = make_router("knn", candidates="all").fit(m, bounds=BOUNDS, X=X)
    Xd, dev = learnable(seed=3)
    scenario, values = calibrate(router, dev, Xd, Target.parse(target),
                                 parse_scenario(family), BOUNDS)
    assert scenario.family == parse_scenario(family).family
    if target.startswith("edge"):
        assert values["edge_share"] >= 0.45
    elif target.startswith("cost"):
        assert values["avg_cost_per_10k"] / 1e4 <= 0.0005
    else:
        assert values["apsp"] >= 0.95 * 1.0    # the reference (dear model) solves everything


def test_impossible_targets_and_bad_specs_are_refused() -> None:
    from vlroute.errors import ScenarioError
    from vlroute.evaluation.calibrate import Target, calibrate

    X, m = learnable()
    router = make_router("knn", candidates="all").fit(m, bounds=BOUNDS, X=X)
    with pytest.raises(ScenarioError, match="No cost_weight meets"):
        calibrate(router, m, X, Target.parse("cost_per_request<=0.00001"),
                  Scenario(cost_weight=0.0), BOUNDS)
    with pytest.raises(ScenarioError, match="Cannot parse target"):
        Target.parse("edge_share<=0.8")


@pytest.mark.parametrize("family", ["knn", "blend"])
def test_per_group_fits_one_row_per_group_and_round_trips(family: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from vlroute.routers.persistence import load_router, save_router
    from vlroute.routers.quality import group_centroids

    X, m = learnable()
    groups = np.array([f"g{i // 4}" for i in range(m.n_samples)], dtype=object)
    m = dataclasses.replace(m, groups=groups)
    rows, centroids = group_centroids(m, X)
    assert rows.n_samples == len(centroids) == m.n_samples // 4 and rows.rates
    assert np.allclose(rows.quality[1], np.nanmean(m.quality[4:8], axis=0))
    router = make_router(family, per="group").fit(m, bounds=BOUNDS, X=X)
    assert router._X_train.shape == (m.n_samples // 4, X.shape[1])
    save_router(router, tmp_path / "art", feature_spec={"dim": 6})
    loaded = load_router(tmp_path / "art", feature_spec={"dim": 6})
    scenario = Scenario(cost_weight=0.05)
    assert (loaded.route(m, scenario, X) == router.route(m, scenario, X)).all()
    # one request per group: the same router as per sample
    single = dataclasses.replace(m, groups=np.array([f"s{i}" for i in range(m.n_samples)],
                                                    dtype=object))
    a = make_router(family, per="group").fit(single, bounds=BOUNDS, X=X)
    b = make_router(family).fit(single, bounds=BOUNDS, X=X)
    np.testing.assert_allclose(a.predict_quality(X), b.predict_quality(X), atol=1e-12)
