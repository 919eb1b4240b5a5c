"""The edge/cloud tau curve: fitting on the pair or on every model (ECVL's stage 1)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import make_set
from test_report import THREE

from vlroute.data import READERS, build_bench
from vlroute.evaluation.tau import tau_curve

# the cloud model is the third column of the wide matrices, the second of the pair's
PAIR = ("Qwen2-VL-7B-Instruct", "gpt-4o-2024-08-06")


@pytest.fixture(scope="module")
def bench_and_x(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, np.ndarray]:
    tmp = tmp_path_factory.mktemp("tau")
    root = make_set(tmp / "set", n_groups=12, per_group=3, images=False, models=THREE)
    bench = build_bench(READERS.get("jsonl")(root, tmp / ".w"), tmp / "bench")
    return bench, np.random.default_rng(0).normal(size=(len(bench.samples), 8))


def test_fitting_on_all_models_keeps_the_pair_columns(bench_and_x: tuple) -> None:
    # kNN estimates each model's P(solved) from its own column, so training on the third model
    # as well must give the same curve: a wrong column mapping would not
    bench, X = bench_and_x
    pair = tau_curve(bench, X, PAIR, seeds=2, params={"n_neighbors": 5})
    wide = tau_curve(bench, X, PAIR, seeds=2, params={"n_neighbors": 5}, fit_on="all")
    assert wide["curve"] == pair["curve"]
    shares = [p["edge_share"] for p in wide["curve"]["test"]]
    assert shares[0] == 1.0 and shares[-1] < 1.0
    assert all(a >= b for a, b in itertools.pairwise(shares))


def test_fitting_on_all_models_reaches_a_multi_model_router(bench_and_x: tuple) -> None:
    bench, X = bench_and_x
    curve = tau_curve(bench, X, PAIR, router="mlp", fit_on="all",
                      params={"max_epochs": 3, "hidden_sizes": (8,)})
    points = curve["curve"]["dev"]
    assert {p["tau"] for p in points} >= {0.0, 1.0}
    assert points[0]["edge_share"] == 1.0


def test_fit_on_is_checked(bench_and_x: tuple) -> None:
    bench, X = bench_and_x
    with pytest.raises(ValueError, match="fit_on must be 'pair' or 'all'"):
        tau_curve(bench, X, PAIR, fit_on="everything")
