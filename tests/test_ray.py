"""Ray: features and eval on a local instance (2 CPUs) equal the local path's."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import make_set, run_cli

from vlroute.data import READERS, build_bench, load_bench
from vlroute.data.bench import Bench
from vlroute.evaluation import EvalSpec, evaluate_bench
from vlroute.evaluation.runner import Job, plan_jobs
from vlroute.features.registry import make_encoder
from vlroute.features.store import compute_features, feature_matrix
from vlroute.scenarios import PRESETS, TUNED, parse_scenario


def test_jobs_are_one_per_learned_router_and_one_per_run_of_baselines() -> None:
    names = ["oracle", "knn", "random", "auto", "best_single_by_rank", "single:a", "single:b"]
    assert plan_jobs(names, 2) == [
        Job(k, g) for k in range(2)
        for g in (("oracle",), ("knn",), ("random",), ("auto",),
                  ("best_single_by_rank", "single:a", "single:b"))]


def test_an_address_nothing_answers_at_fails_at_once_naming_it() -> None:
    from vlroute._ray import _check_reachable
    from vlroute.errors import VlrouteError

    with socket.socket() as s:                      # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(VlrouteError, match=f"cannot reach the Ray cluster at '127.0.0.1:{port}'"):
        _check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(VlrouteError, match="expected HOST:PORT"):
        _check_reachable("head-node")


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    from vlroute._ray import connect

    started = connect(None, num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    root = tmp_path_factory.mktemp("raybench")
    src = make_set(root / "set", n_groups=16, per_group=4)
    bench = build_bench(READERS.get("jsonl")(src, root / "st"), root / "bench")
    compute_features(bench, {"hashing-text": make_encoder("hashing-text"),
                             "hashing-image": make_encoder("hashing-image")})
    return load_bench(root / "bench")


def test_ray_features_equal_the_local_ones(ray_instance: Any, bench: Bench) -> None:
    from vlroute.features.base import Item
    from vlroute.features.on_ray import RayEncoder
    from vlroute.features.store import bench_items

    torch = pytest.importorskip("torch")
    items = bench_items(bench)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # as in an actor of one CPU: float32 sums in one order
    try:
        local = {name: make_encoder(name).encode(items)
                 for name in ("minilm", "efficientnet-lite0")}
    finally:
        torch.set_num_threads(threads)
    for name, vectors in local.items():
        remote = RayEncoder(name, actors=2).encode(items)
        assert remote.shape == vectors.shape
        assert np.abs(remote - vectors).max() < 1e-6, name
    # an item without an image still gets the zero vector (the wrapper keeps the contract)
    assert not RayEncoder("efficientnet-lite0").encode([Item("text only")]).any()


def _without_timings(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("created_at", "timings")}


def test_ray_eval_writes_the_local_document(ray_instance: Any, bench: Bench) -> None:
    from vlroute.evaluation.executors import RayExecutor

    X, fs = feature_matrix(bench, "hashing-text", "hashing-image")
    spec = EvalSpec(routers=("oracle", "random", "auto", "knn", "linear", "prior", "irt",
                             "prknn"),
                    scenarios=(parse_scenario(TUNED), PRESETS["quality"]), seeds=2,
                    features=X, feature_spec=fs, hints=("task",))
    notes: list[str] = []
    local = evaluate_bench(bench, spec)
    remote = evaluate_bench(bench, spec, executor=RayExecutor(), progress=notes.append)
    assert json.dumps(_without_timings(local), default=str) == \
        json.dumps(_without_timings(remote), default=str)
    assert {r["router"] for r in remote["timings"]} == set(spec.routers)
    jobs = [n for n in notes if n.startswith("job ")]
    assert jobs[0] == "job 0/16: 16 jobs sent to Ray"      # then one note per job done
    assert len(jobs) == 1 + len(plan_jobs(["oracle", "random", "auto", "knn", "linear", "prior",
                                           "irt", "prknn", "best_single_by_rank", "single:x"],
                                          2))
    # what this covers too: a policy router sitting a scenario out, and hinted rows
    assert remote["skipped"] and any(r["router"] == "prior+task" for r in remote["rows"])


def test_a_job_error_comes_back_as_itself(ray_instance: Any, bench: Bench) -> None:
    from vlroute.evaluation.executors import RayExecutor

    X, fs = feature_matrix(bench, "hashing-text", "hashing-image")
    spec = EvalSpec(routers=("knn",), features=X, feature_spec=fs,
                    params={"knn": {"n_neighbors": 0}})
    with pytest.raises(ValueError) as local:
        evaluate_bench(bench, spec)
    with pytest.raises(ValueError) as remote:        # not Ray's wrapper and its traceback
        evaluate_bench(bench, spec, executor=RayExecutor())
    assert type(remote.value) is type(local.value)
    assert str(remote.value) == str(local.value)


def test_cli_features_and_eval_on_ray(ray_instance: Any, bench: Bench) -> None:
    out = run_cli("features", bench.root, "--text", "hashing-text", "--image", "none",
                  "--ray")
    assert "Stored hashing-text features" in out
    out = run_cli("eval", bench.root, "--routers", "knn", "--features", "hashing-text,none",
                  "--ray", "--seeds", "2")
    assert "knn" in out
    with pytest.raises(Exception, match="--tokens runs here only"):
        run_cli("features", bench.root, "--tokens", "--ray")
    with pytest.raises(Exception, match="--artifact scores a bundle here"):
        run_cli("eval", bench.root, "--artifact", bench.root, "--ray")
