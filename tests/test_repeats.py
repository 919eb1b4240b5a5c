"""Repeated outcomes of one model on one sample: refused by default, learnt as their mean."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_set, run_cli, write_jsonl

from vlroute.data import READERS, build_bench
from vlroute.errors import DataError
from vlroute.routers import make_router
from vlroute.scenarios import Scenario


def _repeated(root: Path, runs: int = 4, graded: bool = False) -> dict[tuple[str, str], float]:
    """Each (sample, model) outcome repeated ``runs`` times with scores that vary by run;
    returns the expected mean per pair."""
    rows = [json.loads(line) for line in (root / "outcomes.jsonl").read_text().splitlines()]
    out, means = [], {}
    for i, row in enumerate(rows):
        scores = [((i + r) % 3 != 0) * 1.0 for r in range(runs)]
        if graded:
            scores = [round(0.25 * ((i + r) % 5), 2) for r in range(runs)]
        means[(row["sample_id"], row["model"])] = float(np.mean(scores))
        out.extend({**row, "score": s, "raw_score": s} for s in scores)
    write_jsonl(root / "outcomes.jsonl", out)
    return means


def _build(root: Path, out: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    return build_bench(READERS.get("jsonl")(root, out.parent / f".{out.name}"), out, **kwargs)


def test_repeats_are_refused_unless_asked_for(tmp_path: Path) -> None:
    root = make_set(tmp_path / "set", images=False)
    _repeated(root)
    with pytest.raises(DataError, match="--repeats mean"):
        _build(root, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with pytest.raises(DataError, match="repeats must be one of error, mean"):
        _build(root, tmp_path / "b", repeats="median")


def test_binary_repeats_become_success_rates_a_router_learns(tmp_path: Path) -> None:
    root = make_set(tmp_path / "set", n_groups=10, per_group=3, images=False)
    means = _repeated(root)
    bench = _build(root, tmp_path / "b", repeats="mean")
    assert bench.label == "rates"
    assert bench.manifest["set_info"]["repeats_collapsed"] == {
        "policy": "mean", "pairs_repeated": len(means), "max_repeats": 4, "rates": True}
    m = bench.matrices(all_models=True)
    assert m.rates
    for i, sid in enumerate(m.sample_ids):
        for k, model in enumerate(m.models):
            assert m.quality[i, k] == pytest.approx(means[(sid, model)])
    assert any("collapsed to their mean score (a success rate)" in line
               for line in bench.manifest["reader_report"])
    X = np.random.default_rng(0).normal(size=(m.n_samples, 4))
    router = make_router("knn", n_neighbors=5).fit(m, bounds=(1e-4, 1e-3), X=X)
    assert router.binary_             # rates: P(solved) is the predicted rate itself
    assert np.allclose(router.predict_solved(X, 6.0), router.predict_quality(X))
    assert router.route(m, Scenario(tau=0.5, mes=6), X).shape == (m.n_samples,)


def test_graded_repeats_stay_graded_and_set_json_can_ask(tmp_path: Path) -> None:
    root = make_set(tmp_path / "set", images=False)
    means = _repeated(root, runs=3, graded=True)
    info = json.loads((root / "set.json").read_text())
    (root / "set.json").write_text(json.dumps({**info, "label": "graded", "repeats": "mean"}))
    bench = _build(root, tmp_path / "b")
    assert bench.label == "graded" and not bench.matrices(all_models=True).rates
    m = bench.matrices(all_models=True)
    assert m.quality[0, 0] == pytest.approx(means[(m.sample_ids[0], m.models[0])])
    out = run_cli("bench", "build", root, "--out", tmp_path / "c", "--repeats", "mean")
    assert "collapsed to their mean score" in out
