from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_set, write_jsonl

from vlroute.data import READERS, SplitSpec, assign_splits, build_bench, load_bench
from vlroute.data.splits import merge_groups
from vlroute.data.validate import validate_bench
from vlroute.errors import BenchError, DataError, ReaderError


def build(src: Path, out: Path, **kwargs) -> object:
    return build_bench(READERS.get("jsonl")(src, out.parent / "staging"), out, **kwargs)


def test_build_writes_a_complete_bench(toy_set: Path, tmp_path: Path) -> None:
    bench = build(toy_set, tmp_path / "bench")
    names = sorted(p.name for p in (tmp_path / "bench").iterdir())
    assert names == ["images", "images.parquet", "manifest.json", "models.parquet",
                     "records.parquet", "samples.parquet"]
    manifest = json.loads((tmp_path / "bench" / "manifest.json").read_text())
    assert manifest["schema"] == "vlroute-bench/1"
    assert manifest["counts"] == {"samples": 18, "models": 3, "records": 54, "images": 18,
                                  "groups": 6}
    assert {s["path"] for s in manifest["sources"]} >= {"samples.jsonl", "outcomes.jsonl"}
    m = bench.matrices()
    assert m.quality.shape == (18, 3) and m.models == ("small-2b", "big-72b",
                                                       "gpt-4o-2024-08-06")
    assert m.tiers == ("edge", "cloud", "cloud")
    assert np.isfinite(m.cost).all() and (m.cost > 0).all()
    assert manifest["economics"]["estimated_share"]["cost_usd"] == 1.0
    assert validate_bench(load_bench(tmp_path / "bench", verify=True)).ok


def test_measured_values_win_and_are_not_flagged(tmp_path: Path) -> None:
    src = make_set(tmp_path / "set", n_groups=2, per_group=1)
    rows = [json.loads(line) for line in (src / "outcomes.jsonl").read_text().splitlines()]
    rows[0]["cost_usd"] = 0.5
    rows[0]["latency_s"] = 1.25
    write_jsonl(src / "outcomes.jsonl", rows)
    bench = build(src, tmp_path / "bench")
    first = bench.records.iloc[0]
    assert (first["cost_usd"], first["latency_s"]) == (0.5, 1.25)
    assert not first["cost_usd_estimated"] and bench.records["cost_usd_estimated"].iloc[1]


@pytest.mark.parametrize(("file", "line", "mutate", "message"), [
    ("outcomes", 2, lambda r: r.update(score=1.5), r"line 2: 'score' is 1.5; expected a number"),
    ("outcomes", 1, lambda r: r.update(sample_id="nope"), "line 1: unknown sample_id 'nope'"),
    ("outcomes", 3, lambda r: r.update(model="ghost"), "line 3: unknown model 'ghost'"),
    ("samples", 2, lambda r: r.pop("group"), "line 2: missing required key 'group'"),
    ("samples", 1, lambda r: r.update(images=["/etc/passwd"]), "must be relative"),
    ("samples", 2, lambda r: r.update(sample_id="G0_v0"), "duplicate sample_id 'G0_v0'"),
    ("models", 1, lambda r: r.update(open_weights="yes"), "'open_weights' is str"),
    ("models", 1, lambda r: r.update(modality="audio"), "expected one of vision-language"),
])
def test_malformed_input_names_file_line_and_expectation(tmp_path: Path, file: str, line: int,
                                                         mutate, message: str) -> None:
    src = make_set(tmp_path / "set")
    path = src / f"{file}.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    mutate(rows[line - 1])
    write_jsonl(path, rows)
    with pytest.raises(ReaderError, match=message) as info:
        build(src, tmp_path / "bench")
    assert f"{file}.jsonl" in str(info.value)
    assert not (tmp_path / "bench").exists()


def test_invalid_json_line_is_reported(tmp_path: Path) -> None:
    src = make_set(tmp_path / "set")
    with (src / "outcomes.jsonl").open("a") as handle:
        handle.write('{"sample_id": "G0_v0", "model":\n')
    with pytest.raises(ReaderError, match=r"outcomes.jsonl, line 55: not valid JSON"):
        READERS.get("jsonl")(src, tmp_path)


def test_failed_build_keeps_the_existing_bench(toy_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    build(toy_set, out)
    before = (out / "manifest.json").read_text()
    (toy_set / "images" / "G1_v1.png").unlink()
    with pytest.raises(DataError, match=r"G1_v1\.png"):
        build(toy_set, out, overwrite=True)
    assert (out / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(FileExistsError):
        build(toy_set, out)


def test_load_bench_refuses_what_is_not_a_bench(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"no manifest\.json"):
        load_bench(tmp_path)
    (tmp_path / "manifest.json").write_text('{"schema": "other/9"}')
    with pytest.raises(BenchError, match="not supported"):
        load_bench(tmp_path)


def test_splits_are_grouped_seeded_and_near_the_fractions() -> None:
    groups = [f"g{i // 10}" for i in range(1000)]
    a = assign_splits(groups, SplitSpec(seed=1))
    assert (a == assign_splits(list(reversed(groups)), SplitSpec(seed=1))[::-1]).all()
    assert not (a == assign_splits(groups, SplitSpec(seed=2))).all()
    frame = pd.DataFrame({"g": groups, "s": a})
    assert frame.groupby("g")["s"].nunique().max() == 1
    counts = frame["s"].value_counts()
    assert abs(counts["train"] - 700) <= 10 and abs(counts["test"] - 200) <= 10


def test_official_split_and_stratification() -> None:
    groups = [f"g{i}" for i in range(100)]
    official = ["test" if i < 20 else "train" for i in range(100)]
    out = assign_splits(groups, SplitSpec(seed=0), official=official)
    assert (out[:20] == "test").all() and "test" not in set(out[20:])
    assert (out[20:] == "dev").sum() == 10
    datasets = ["A"] * 50 + ["B"] * 50
    strat = assign_splits(groups, SplitSpec(seed=0, stratify=True), datasets=datasets)
    assert (strat[:50] == "test").sum() == 10 and (strat[50:] == "test").sum() == 10
    with pytest.raises(DataError, match="sum to 1"):
        SplitSpec(train=0.9, dev=0.2, test=0.1)
    with pytest.raises(DataError, match="straddle"):
        assign_splits(["a", "a"], official=["test", "train"])


def test_groups_sharing_an_image_travel_together(tmp_path: Path) -> None:
    assert merge_groups(["a", "b", "c", "d"], [("b", "d")]) == ["a", "b", "c", "b"]
    src = make_set(tmp_path / "set", n_groups=8, per_group=1)
    (src / "images" / "G5_v0.png").write_bytes((src / "images" / "G2_v0.png").read_bytes())
    bench = build(src, tmp_path / "bench")
    s = bench.samples.set_index("sample_id")
    assert s.at["G5_v0", "split_group"] == s.at["G2_v0", "split_group"] == "G2"
    report = validate_bench(bench)
    assert report.ok and any("shared by two or more groups" in w for w in report.warnings)


def test_validate_separates_errors_from_warnings(toy_set: Path, tmp_path: Path) -> None:
    bench = build(toy_set, tmp_path / "bench")
    bench.records = bench.records.iloc[1:].reset_index(drop=True)     # a missing pair
    report = validate_bench(bench)
    assert report.ok and report.stats["missing_pairs"] == 1
    bench.records.loc[0, "score"] = 2.0
    bench.samples.loc[0, "split"] = "test" if bench.samples.loc[1, "split"] != "test" else "dev"
    (bench.root / "images" / "G2_v0.png").write_bytes(b"not an image")
    report = validate_bench(bench)
    text = " ".join(report.errors)
    assert "outside [0, 1]" in text and "straddle" in text and "unreadable image" in text


def test_matrices_with_missing_pairs_hold_nan(tmp_path: Path) -> None:
    src = make_set(tmp_path / "set", n_groups=2, per_group=1)
    rows = [json.loads(x) for x in (src / "outcomes.jsonl").read_text().splitlines()]
    write_jsonl(src / "outcomes.jsonl", rows[1:])
    m = build(src, tmp_path / "bench").matrices()
    assert np.isnan(m.quality[0, 0]) and np.isnan(m.cost[0, 0])
    assert np.isfinite(m.quality[1]).all()
    sub = m.select_models(["big-72b"]).subset(np.array([1]))
    assert sub.quality.shape == (1, 1) and sub.tiers == ("cloud",)
