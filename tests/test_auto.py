"""``auto`` (the router chosen on dev), group-mean labels, the task-prior routers and the
random protocol, on the embedded DynaMath demo set with the fast hashing encoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli as run

from vlroute.data import load_bench
from vlroute.data.bench import resplit
from vlroute.demo_data import demo_set_path
from vlroute.evaluation import EvalSpec, evaluate_bench, flat_rows
from vlroute.features.store import feature_matrix
from vlroute.metrics import cost_bounds
from vlroute.routers import make_router
from vlroute.routers.bundle import load_bundle
from vlroute.routers.priors import task_codes
from vlroute.scenarios import TUNED, parse_scenario


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("auto") / "bench"
    run("bench", "build", demo_set_path(), "--out", root)
    run("features", root, "--text", "hashing-text", "--image", "hashing-image")
    return root


def test_group_means_average_each_group_per_model(bench_dir: Path) -> None:
    m = load_bench(bench_dir).matrices()
    g = m.group_means()
    assert g.rates and not m.rates
    first = m.groups == m.groups[0]
    assert np.allclose(g.quality[first], np.nanmean(m.quality[first], axis=0))
    assert np.allclose(np.nanmean(g.quality, axis=0), np.nanmean(m.quality, axis=0))


def test_outcome_derived_tasks_are_not_a_signal() -> None:
    codes, names = task_codes(np.array(["difficulty-hard", "algebra", "difficulty-easy",
                                        None], dtype=object))
    assert names == ["", "algebra"] and codes.tolist() == [0, 1, 0, 0]


@pytest.mark.parametrize("name", ["prior", "blend"])
def test_task_prior_routers_predict_rates_and_round_trip(bench_dir: Path, tmp_path: Path,
                                                         name: str) -> None:
    from vlroute.routers.persistence import load_router, save_router

    bench = load_bench(bench_dir)
    X, spec = feature_matrix(bench, "hashing-text", "hashing-image")
    m = bench.matrices()
    train = m.splits == "train"
    router = make_router(name).fit(m.subset(train), bounds=cost_bounds(m.cost), X=X[train])
    preds = router.predict_quality(X[~train])  # type: ignore[attr-defined]
    assert preds.shape == (int((~train).sum()), m.n_models)
    assert (preds >= 0).all() and (preds <= 1).all()
    save_router(router, tmp_path / name, feature_spec=spec)
    again = load_router(tmp_path / name, feature_spec=spec)
    assert np.allclose(again.predict_quality(X[~train]), preds)  # type: ignore[attr-defined]


def test_auto_is_chosen_on_dev_and_says_why(bench_dir: Path) -> None:
    bench = load_bench(bench_dir)
    X, spec = feature_matrix(bench, "hashing-text", "hashing-image")
    doc = evaluate_bench(bench, EvalSpec(routers=("auto",), scenarios=(parse_scenario(TUNED),),
                                         seeds=2, features=X, feature_spec=spec,
                                         singles=False))
    rows = {r["router"]: r for r in flat_rows(doc)}
    assert {"auto", "oracle", "best_single_by_rank"} <= set(rows)
    assert len(doc["auto"]) == 2
    for choice in doc["auto"]:
        tried = choice["tried"]
        routers = [t["rank_score"] for t in tried if t["router"] != "constant"]
        singles = [t["rank_score"] for t in tried if t["router"] == "constant"]
        # the best router on dev when it beat the best single model on >= 80% of the dev
        # bootstrap resamples, else the best single model
        if choice["router"] == "constant":       # the best single model on train
            assert choice["dev"]["rank_score"] in [pytest.approx(v) for v in singles]
            assert choice["confidence_over_single"] < 0.8
        else:
            assert choice["dev"]["rank_score"] == pytest.approx(max(routers))
            assert choice["confidence_over_single"] >= 0.8
        assert {t["router"] for t in tried} >= {"knn", "prior", "blend", "mf", "constant"}
        assert {t["labels"] for t in tried if t["router"] == "knn"} == {"sample",
                                                                          "group_mean"}


def test_train_auto_writes_a_bundle_eval_scores_the_same(bench_dir: Path,
                                                         tmp_path: Path) -> None:
    out = run("train", "auto", bench_dir, "--features", "hashing-text,hashing-image",
              "--out", tmp_path / "auto")
    assert "Saved auto" in out
    bundle = load_bundle(tmp_path / "auto")
    section = bundle.section
    assert section["router_name"].startswith("auto:") and section["selection"]["tried"]
    assert section["labels"] in ("sample", "group_mean")
    run("eval", bench_dir, "--artifact", tmp_path / "auto", "--json", tmp_path / "a.json")
    rows = json.loads((tmp_path / "a.json").read_text())
    assert rows[0]["router"] == "bundle" and rows[0]["rank_score"] is not None


def test_eval_defaults_to_auto_with_features_and_labels_and_protocol_options(
        bench_dir: Path, tmp_path: Path) -> None:
    out = run("eval", bench_dir, "--features", "hashing-text,hashing-image",
              "--json", tmp_path / "d.json")
    routers = {r["router"] for r in json.loads((tmp_path / "d.json").read_text())}
    assert "auto" in routers and all(r["scenario"] == TUNED for r in
                                     json.loads((tmp_path / "d.json").read_text()))
    assert "auto" in out
    run("eval", bench_dir, "--routers", "knn", "--labels", "group_mean", "--features",
        "hashing-text,hashing-image", "--protocol", "random", "--results", tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["protocol"] == "random"


def test_the_random_protocol_splits_groups_the_grouped_one_keeps_them(bench_dir: Path) -> None:
    bench = load_bench(bench_dir)
    groups = bench.samples["split_group"].to_numpy()
    for protocol, together in (("grouped", True), ("random", False)):
        splits = resplit(bench, 7, protocol)
        per_group = {g: set(splits[groups == g]) for g in np.unique(groups)}
        assert all(len(s) == 1 for s in per_group.values()) == together


def test_eval_target_calibrates_the_pair_on_dev(bench_dir: Path, tmp_path: Path) -> None:
    run("eval", bench_dir, "--features", "hashing-text,hashing-image", "--models",
        "Qwen2-VL-7B-Instruct,Qwen2-VL-72B-Instruct", "--routers", "auto,knn",
        "--scenario", "mes=6,edge_first=1", "--target", "apsp_drop<=0.05", "--seeds", "2",
        "--json", tmp_path / "t.json", "--results", tmp_path / "t-doc.json")
    rows = {r["router"]: r for r in json.loads((tmp_path / "t.json").read_text())}
    assert {"auto", "knn", "oracle"} <= set(rows)
    for name in ("auto", "knn"):
        assert rows[name]["edge_share"] is not None and rows[name]["apsp_drop"] is not None
    doc = json.loads((tmp_path / "t-doc.json").read_text())
    calibrated = [c for c in doc["calibrations"] if c["router"] in ("auto", "knn")]
    assert len(calibrated) == 4 and all("tau" in c for c in calibrated)
    assert all(c["dev"]["edge_share"] is not None for c in calibrated)


def test_eval_reports_hinted_rows_beside_the_others(bench_dir: Path, tmp_path: Path) -> None:
    run("eval", bench_dir, "--features", "hashing-text,hashing-image", "--routers",
        "prior,knn", "--hints", "task", "--json", tmp_path / "h.json")
    rows = {r["router"]: r for r in json.loads((tmp_path / "h.json").read_text())}
    assert {"prior", "prior+task", "knn"} <= set(rows) and "knn+task" not in rows
    assert rows["prior+task"]["rank_score"] is not None
