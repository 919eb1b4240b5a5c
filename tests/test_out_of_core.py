"""Large sources in bounded memory: Parquet read in row batches, records written a chunk at a
time, and routing matrices memory-mapped as float32."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from vlroute.data import READERS, Bench, build_bench, load_bench
from vlroute.data.matrices import MATRIX_FIELDS, column_means, is_mapped, release
from vlroute.data.readers.streamed import read_parquet
from vlroute.errors import BenchError, DataError, ReaderError
from vlroute.evaluation import EvalSpec, evaluate_bench
from vlroute.objectives import solved


def _long_frame(n: int = 40, m: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in rng.permutation(n):                       # samples out of order
        for k in rng.permutation(m):
            rows.append({"sample_id": f"s{s}", "model": f"model-{k}b" if k else "api",
                         "score": float(rng.random() < 0.3 + 0.2 * k),
                         "group": f"g{s // 4}", "question": "What is x?" * (1 + s % 3),
                         "task": f"t{s % 2}", "params_b": float(k) if k else None,
                         "response": None if s % 5 else "x = 4",
                         "latency_s": 0.25 if (s + k) % 7 == 0 else None})
    return pd.DataFrame(rows)


def _streamed(tmp_path: Path, frame: pd.DataFrame, rows: int | None = None) -> Bench:
    """``frame`` written as Parquet, read in batches of ``rows`` and built into a bench."""
    frame.to_parquet(tmp_path / "runs.parquet", index=False)
    tables = read_parquet(tmp_path / "runs.parquet", tmp_path / "st",
                          **({"rows": rows} if rows else {}))
    return build_bench(tables, tmp_path / "bench")


def _same_bench(a: Path, b: Path) -> None:
    for name in ("samples", "models", "images", "records"):
        left, right = pq.read_table(a / f"{name}.parquet"), pq.read_table(b / f"{name}.parquet")
        assert left.to_pydict() == right.to_pydict(), name    # dictionaries differ by chunk
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    for key in ("counts", "split", "economics"):
        assert ma[key] == mb[key], key


def test_streamed_parquet_builds_the_bench_csv_builds(tmp_path: Path) -> None:
    frame = _long_frame().drop(columns="response")    # CSV reads an empty response as ""
    frame.to_csv(tmp_path / "runs.csv", index=False)
    frame.to_parquet(tmp_path / "runs.parquet", index=False, row_group_size=7)
    whole = build_bench(READERS.get("csv")(tmp_path / "runs.csv", tmp_path), tmp_path / "a")
    tables = read_parquet(tmp_path / "runs.parquet", tmp_path, rows=5)   # 24 batches
    assert tables.outcomes is None and tables.stream is not None
    assert tables.stream.rows == len(frame)
    streamed = build_bench(tables, tmp_path / "b")
    _same_bench(whole.root, streamed.root)
    assert streamed.samples["sample_id"].tolist() == list(dict.fromkeys(frame["sample_id"]))


def test_a_stream_read_whole_builds_the_same_bench(tmp_path: Path) -> None:
    _long_frame().to_parquet(tmp_path / "runs.parquet", index=False)
    tables = read_parquet(tmp_path / "runs.parquet", tmp_path, rows=6)
    whole = tables.in_memory()
    assert whole.stream is None and whole.outcomes is not None
    assert whole.outcomes["response"].notna().sum() == 24
    _same_bench(build_bench(whole, tmp_path / "a").root, build_bench(tables, tmp_path / "b").root)


def test_a_repeat_in_a_later_batch_names_its_row(tmp_path: Path) -> None:
    frame = _long_frame(n=10)
    frame = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    frame.to_parquet(tmp_path / "runs.parquet", index=False)
    tables = read_parquet(tmp_path / "runs.parquet", tmp_path, rows=4)
    with pytest.raises(DataError, match=rf"outcome row {len(frame) - 1} repeats the pair"):
        build_bench(tables, tmp_path / "bench")
    assert not (tmp_path / "bench").exists()
    tables = read_parquet(tmp_path / "runs.parquet", tmp_path, rows=4)
    bench = build_bench(tables, tmp_path / "bench", repeats="mean")
    assert bench.manifest["counts"]["records"] == len(frame) - 1
    assert bench.manifest["set_info"]["repeats_collapsed"]["pairs_repeated"] == 1


def test_streamed_errors_name_the_file_row(tmp_path: Path) -> None:
    frame = _long_frame(n=10)
    frame.loc[17, "score"] = 3.0
    frame.to_parquet(tmp_path / "bad.parquet", index=False)
    tables = read_parquet(tmp_path / "bad.parquet", tmp_path, rows=4)
    with pytest.raises(ReaderError, match=r"bad.parquet.*row 17: 'score' is 3.0"):
        build_bench(tables, tmp_path / "bench")
    frame = _long_frame(n=10)
    frame.loc[25, "group"] = "elsewhere"
    frame.to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(ReaderError, match=r"row 25: sample .* has several groups"):
        read_parquet(tmp_path / "bad.parquet", tmp_path, rows=4)
    frame.loc[25, "group"] = frame.loc[24, "group"] if frame.loc[24, "sample_id"] == \
        frame.loc[25, "sample_id"] else frame.loc[26, "group"]
    frame["model"] = frame["model"].astype(object)
    frame.loc[9, "model"] = None
    frame.to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(ReaderError, match=r"row 9: 'model' is empty"):
        read_parquet(tmp_path / "bad.parquet", tmp_path, rows=4)


def test_out_of_core_matrices_are_float32_maps_equal_to_the_in_memory_ones(
        tmp_path: Path) -> None:
    bench = _streamed(tmp_path, _long_frame(), rows=7)
    full = bench.matrices()
    mapped = bench.matrices(out_of_core=True)
    assert full.quality.dtype == np.float64 and not is_mapped(full.quality)
    assert mapped.quality.dtype == np.float32 and is_mapped(mapped.quality)
    release(mapped.quality)                        # pages leave memory, values stay
    np.testing.assert_allclose(mapped.quality, full.quality, rtol=1e-6)
    test = mapped.split("test")
    assert not is_mapped(test.quality)
    for name in MATRIX_FIELDS:
        np.testing.assert_allclose(getattr(mapped, name), getattr(full, name), rtol=1e-6)
    assert not list(Path(tempfile.gettempdir()).glob("vlroute-matrix-*"))   # anonymous
    part = bench.matrices(fields=("quality",))
    assert np.isnan(part.cost).all() and part.cost.strides == (0, 0)
    test = part.split("test").select_models(list(part.models[:2]))
    assert test.cost.shape == (test.n_samples, 2) and test.cost.strides == (0, 0)
    np.testing.assert_array_equal(test.quality,
                                  full.split("test").select_models(list(part.models[:2])).quality)
    with pytest.raises(BenchError, match="Unknown matrix field"):
        bench.matrices(fields=("quality", "costs"))


def test_an_evaluation_out_of_core_agrees_with_the_in_memory_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _streamed(tmp_path, _long_frame(n=120))
    spec = EvalSpec(seeds=2, breakdown=False)
    in_memory = evaluate_bench(load_bench(bench.root), spec)
    monkeypatch.setattr("vlroute.data.bench.OUT_OF_CORE_PAIRS", 0)
    mapped = evaluate_bench(load_bench(bench.root), spec)
    assert len(mapped["rows"]) == len(in_memory["rows"]) > 0
    for a, b in zip(in_memory["rows"], mapped["rows"], strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float) and key != "route_ms":
                assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
            elif key != "route_ms":
                assert b[key] == value, key


def test_a_list_column_of_images_is_read(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "img").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (64, 48)).save(tmp_path / "img" / f"{name}.png")
    frame = pd.DataFrame({"sample_id": ["s1", "s1", "s2", "s2"], "model": ["m", "n"] * 2,
                          "score": [1.0, 0.0, 0.0, 1.0],
                          "images": [["img/a.png"], ["img/a.png"], ["img/a.png", "img/b.png"],
                                     ["img/a.png", "img/b.png"]]})
    bench = _streamed(tmp_path, frame)        # images: list<string>, a nested column
    assert bench.samples["n_images"].tolist() == [1, 2]
    assert bench.manifest["counts"]["images"] == 3


def test_bad_sources_are_named_not_built(tmp_path: Path) -> None:
    pd.DataFrame({"sample_id": pd.Series([], dtype=str), "model": pd.Series([], dtype=str),
                  "score": pd.Series([], dtype=float)}).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(ReaderError, match=r"empty.parquet.*no rows"):
        read_parquet(tmp_path / "empty.parquet", tmp_path)
    # a sample whose rows span batches: the earliest disagreeing row is named
    frame = pd.DataFrame({"sample_id": ["a", "b", "a", "a"], "model": ["m", "m", "n", "o"],
                          "score": [1.0, 0.0, 1.0, 0.0], "group": ["A", "B", "X", "A"]})
    frame.to_parquet(tmp_path / "groups.parquet", index=False)
    with pytest.raises(ReaderError, match=r"row 2: sample 'a' has several groups"):
        read_parquet(tmp_path / "groups.parquet", tmp_path, rows=2)


def test_unloaded_fields_stay_views_through_pickling_and_real_views_stay_data(
        tmp_path: Path) -> None:
    import pickle

    bench = _streamed(tmp_path, _long_frame())
    part = bench.matrices(fields=("quality", "cost"))
    again = pickle.loads(pickle.dumps(part))
    assert again.unloaded == part.unloaded == {"latency", "energy", "tokens_in", "tokens_out"}
    assert again.latency.strides == (0, 0) and np.isnan(again.latency).all()
    assert len(pickle.dumps(part)) < len(pickle.dumps(bench.matrices())) * 0.6
    np.testing.assert_array_equal(again.cost, part.cost)
    # a caller's own broadcast matrix is data, not a missing field
    full = bench.matrices()
    prices = np.broadcast_to(np.arange(full.n_models, dtype=float), full.cost.shape)
    priced = dataclasses.replace(full, cost=prices)
    assert priced.split("test").cost[0].tolist() == list(range(full.n_models))
    assert column_means(prices).tolist() == list(range(full.n_models))


def test_release_leaves_other_maps_alone(tmp_path: Path) -> None:
    path = tmp_path / "m.npy"
    np.save(path, np.zeros((8, 4)))
    own = np.load(path, mmap_mode="c")          # a private copy-on-write map
    own[0, 0] = 1.0
    release(own)
    assert own[0, 0] == 1.0 and not is_mapped(own)


def test_graded_float32_qualities_are_solved_at_their_mes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    frame = _long_frame(n=200, m=4)
    frame["score"] = rng.integers(0, 11, len(frame)) / 10      # graded, a 0.1 grid
    bench = _streamed(tmp_path, frame)
    mapped = bench.matrices(out_of_core=True).group_means()
    exact = bench.matrices().group_means()
    for mes in (7.0, 9.0):
        np.testing.assert_array_equal(solved(mapped.quality, mes), solved(exact.quality, mes))
