"""The four shared sets build, validate and match their PROVENANCE figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import needs_shared

from vlroute.data import READERS, build_bench
from vlroute.data.validate import validate_bench
from vlroute.evaluation import EvalSpec, evaluate_bench, flat_rows
from vlroute.metrics import oracle_decisions

# set -> (samples, candidate models, oracle, best single model mean) from each PROVENANCE.md
EXPECTED = {
    "dynamath": (5010, 14, 0.871, 0.648),
    "mathv": (3040, 13, 0.593, 0.177),
    "vibe_eval": (269, 13, 0.882, None),
    "llmrouter_text": (5989, 9, None, None),
}


@pytest.fixture(scope="module")
def benches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = {}
    for name in EXPECTED:
        src = needs_shared(name)
        root = tmp_path_factory.mktemp(name)
        out[name] = build_bench(READERS.get("jsonl")(src, root / "staging"), root / "bench")
    return out


@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_sets_build_validate_and_match_provenance(benches, name: str) -> None:
    bench = benches[name]
    n, n_models, oracle, best = EXPECTED[name]
    report = validate_bench(bench)
    assert report.ok, report.errors
    m = bench.matrices()
    assert m.quality.shape == (n, n_models)
    picked = m.quality[np.arange(n), oracle_decisions(m.quality, m.cost)]
    if oracle is not None:
        assert picked.mean() == pytest.approx(oracle, abs=0.001)
    if best is not None:
        assert np.nanmean(m.quality, 0).max() == pytest.approx(best, abs=0.001)


def test_official_split_is_honoured(benches) -> None:
    s = benches["llmrouter_text"].samples
    official_test = s["sample_id"].str.startswith("test-")
    assert (s.loc[official_test, "split"] == "test").all()
    assert (s.loc[~official_test, "split"] != "test").all()
    assert (s["split"] == "dev").sum() > 0


def test_dynamath_splits_never_break_a_seed_question(benches) -> None:
    s = benches["dynamath"].samples
    assert s.groupby("group")["split"].nunique().max() == 1
    assert s.groupby("split_group")["split"].nunique().max() == 1


def test_baselines_on_dynamath(benches) -> None:
    doc = evaluate_bench(benches["dynamath"], EvalSpec(seeds=2))
    rows = {r["router"]: r for r in flat_rows(doc)}
    assert rows["oracle"]["avg_acc"] >= max(r["avg_acc"] for r in rows.values())
    assert rows["oracle"]["gap_closed"] == pytest.approx(1.0)
    assert rows["best_single_by_rank"]["gap_closed"] == pytest.approx(0.0)
    assert all(0 <= r["rank_score"] <= 100 for r in rows.values())
    assert len(doc["singles"]) == 14 and any(r["pareto"] for r in doc["singles"])
    assert rows["random"]["rank_score_std"] is not None


def test_text_only_set_routes_among_its_llms(benches) -> None:
    assert len(benches["llmrouter_text"].candidate_models()) == 9
    assert len(benches["mathv"].candidate_models(all_models=True)) == 16


def test_bench_files_are_small(benches) -> None:
    root = Path(benches["vibe_eval"].root)
    assert (root / "records.parquet").stat().st_size < 5_000_000
