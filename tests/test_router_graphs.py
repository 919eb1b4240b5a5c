"""Routers as ONNX graphs (``router.onnx``): the graph's predicted quality equals the numpy
router's, so the decisions a runtime without Python makes are the bundle's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_baselines import matrices
from test_routers_learned import BOUNDS, learnable

from vlroute.routers import make_router
from vlroute.routers.onnx_graph import graph_outputs, router_graph, write_router_graph
from vlroute.scenarios import Scenario

pytest.importorskip("onnx", reason="building the graphs needs `pip install -e '.[dev]'`")
pytest.importorskip("onnxruntime")

GRAPHS = [("knn", {"n_neighbors": 5}), ("knn", {"n_neighbors": 5, "weighted": True}),
          ("knn", {"n_neighbors": 3, "per": "group"}), ("linear", {}),
          ("mlp", {"max_epochs": 20}), ("mf", {"max_epochs": 20}),
          ("irt", {"max_epochs": 20, "components": 4})]


def _rows(X: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    # unseen rows, exact train rows (ties at 9 decimals between duplicates), a zero row
    return np.vstack([X + 0.05 * rng.normal(size=X.shape), X[:20], X[:20],
                      np.zeros((1, X.shape[1]))])


@pytest.mark.parametrize(("name", "params"), GRAPHS)
def test_the_graph_predicts_what_the_router_does(name: str, params: dict[str, object]
                                                 ) -> None:
    X, m = learnable()
    if params.get("per") == "group":       # 12 groups of 20 rows
        m.groups[:] = np.array([f"g{i % 12}" for i in range(len(X))], dtype=object)
    router = make_router(name, candidates="all", **params).fit(m, bounds=BOUNDS, X=X)
    model = router_graph(router)
    assert model is not None
    Q = _rows(X)
    got, want = graph_outputs(model, Q), router.predict_quality(Q)
    assert got.shape == want.shape == (len(Q), 4)
    assert np.abs(got - want).max() < 1e-9
    scenario = Scenario(cost_weight=0.3)
    assert np.array_equal(router.decide(got, scenario), router.decide(want, scenario))


def test_the_task_prior_graph_and_routers_without_one(tmp_path: Path) -> None:
    X, _ = learnable()
    quality = np.stack([X[:, 0] > 0, X[:, 0] <= 0, np.ones(len(X), bool)], axis=1)
    tasks = ["a" if x > 0 else "b" for x in X[:, 0]]
    m = matrices(quality.astype(float), np.array([1e-4, 4e-4, 4e-3]), tasks=tasks)
    prior = make_router("prior").fit(m, bounds=BOUNDS, X=X)
    entry = write_router_graph(prior, tmp_path / "router.onnx")
    assert entry["graph"] == "router.onnx" and entry["max_abs_diff_on_probe_rows"] < 1e-9
    assert entry["without_hints"] == ["task"]       # the graph cannot read x-vlroute-task
    from onnx import load

    got = graph_outputs(load(str(tmp_path / "router.onnx")), X)
    assert np.abs(got - prior.predict_quality(X)).max() < 1e-9
    # GBDT (LightGBM) has no graph: nothing is written, and the entry says why
    gbdt = make_router("gbdt", n_estimators=5).fit(m, bounds=BOUNDS, X=X)
    entry = write_router_graph(gbdt, tmp_path / "gbdt.onnx")
    assert entry["graph"] is None and "GBDTRouter" in entry["why"]
    assert not (tmp_path / "gbdt.onnx").exists()
    assert router_graph(make_router("knn")) is None                     # not fitted
