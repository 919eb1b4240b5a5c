"""The toolkit readers on the shared fixtures and on fixtures of our own."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED

from vlroute.data import READERS, build_bench
from vlroute.data.validate import validate_bench
from vlroute.errors import ReaderError

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR42mO4IyeHFTEMLQkA"
                       "id1GAQVcagkAAAAASUVORK5CYII=")


def fixture(name: str) -> Path:
    path = SHARED / "fixtures" / name
    if not path.is_dir():
        pytest.skip(f"shared fixture {name} not available")
    return path


def test_vlmevalkit_fixture(tmp_path: Path) -> None:
    tables = READERS.get("vlmevalkit")(fixture("vlmevalkit"), tmp_path / "staging")
    assert len(tables.outcomes) == 6 and tables.outcomes["score"].sum() == 4
    assert tables.samples["images"].map(len).tolist() == [1, 1, 1, 1, 1, 2]
    assert "1 failed inferences" in tables.report[0] and "6 joined" in tables.report[0]
    assert tables.models["model"].tolist() == ["demo-vlm-7b"]
    assert tables.models["params_b"].tolist() == [7.0]
    assert tables.sources[0]["judge"] == "exact_matching"
    assert "Options:\nA. red" in tables.samples["question"].iloc[0]
    bench = build_bench(tables, tmp_path / "bench")
    assert len(bench.images) == 7 and validate_bench(bench, decode_images=True).ok
    assert bench.matrices().quality.mean() == pytest.approx(4 / 6)


def test_lmms_eval_fixture(tmp_path: Path) -> None:
    tables = READERS.get("lmms_eval")(fixture("lmms_eval"), tmp_path)
    o = tables.outcomes
    assert o["model"].unique().tolist() == ["demo-org/demo-vlm-7b"]
    assert o["sample_id"].tolist() == [f"tinyshapes_vqa/{i}" for i in range(6)]
    results = json.loads(next((fixture("lmms_eval") / "logs").rglob("*_results.json"))
                         .read_text())
    assert o["score"].mean() == pytest.approx(results["results"]["tinyshapes_vqa"]
                                              ["exact_match,none"])
    assert o.loc[1, "response"].startswith("<think>") and o.loc[1, "prediction"] == "blue"
    assert np.isnan(o.loc[3, "tokens_in"]) and o.loc[0, "tokens_in"] == 402
    bench = build_bench(tables, tmp_path / "bench")
    assert not bench.records["tokens_in_estimated"].iloc[0]
    assert bench.records["tokens_in_estimated"].iloc[3]


def _vlmevalkit_tree(root: Path, flat: bool) -> Path:
    """A legacy-style run: flat folder, TSV predictions, MCQ (openai tag), Y/N and VQA."""
    lmu = root / "LMUData"
    lmu.mkdir(parents=True)
    img = base64.b64encode(PNG).decode()
    pd.DataFrame({"index": [1, 2], "image": [img, "1"], "question": ["q1", "q2"],
                  "A": ["x", "x"], "B": ["y", "y"], "answer": ["A", "B"],
                  "category": ["c", "c"]}).to_csv(lmu / "Shapes_MCQ.tsv", sep="\t", index=False)
    pd.DataFrame({"index": [7, 8], "image": [img, img], "question": ["yes?", "no?"],
                  "answer": ["Yes", "No"]}).to_csv(lmu / "HallusionBench.tsv", sep="\t",
                                                   index=False)
    pd.DataFrame({"index": [1, 2], "image": [img, img], "question": ["t1", "t2"],
                  "answer": ["a", "b"]}).to_csv(lmu / "DocVQA_VAL.tsv", sep="\t", index=False)
    run = root / "outputs" / "Tiny_Model-2B" / ("" if flat else "T20241105_G1a2b3c4d")
    run.mkdir(parents=True)
    m = "Tiny_Model-2B"
    pd.DataFrame({"index": [1.0, 2.0], "hit": [1, 0], "prediction": ["A", "A"]}).to_csv(
        run / f"{m}_Shapes_MCQ_openai_result.tsv", sep="\t", index=False)
    pd.DataFrame({"index": [7, 8], "score": [True, True], "prediction": ["Yes", "No"]}).to_csv(
        run / f"{m}_HallusionBench_auxmatch.tsv", sep="\t", index=False)
    pd.DataFrame({"index": [1, 2], "eval_match": ["[0.1, 0.6]", "[0.7]"],
                  "eval_score": [0.35, 0.7], "prediction": ["a", "zz"]}).to_csv(
        run / f"{m}_DocVQA_VAL_results.tsv", sep="\t", index=False)
    (run / f"{m}_Shapes_MCQ.tsv").write_text("index\tprediction\n1\tA\n")  # predictions: ignored
    return root / "outputs"


@pytest.mark.parametrize("flat", [True, False])
def test_vlmevalkit_legacy_layouts_and_dataset_types(tmp_path: Path, flat: bool) -> None:
    src = _vlmevalkit_tree(tmp_path, flat)
    tables = READERS.get("vlmevalkit")(src, tmp_path / "staging")
    scores = dict(zip(tables.outcomes["sample_id"], tables.outcomes["score"], strict=True))
    assert scores["Shapes_MCQ/1"] == 1 and scores["Shapes_MCQ/2"] == 0
    assert scores["HallusionBench/7"] == 1 and scores["HallusionBench/8"] == 1
    # ANLS: 1 - min(distance), zero below 0.5
    assert scores["DocVQA_VAL/1"] == pytest.approx(0.9) and scores["DocVQA_VAL/2"] == 0.0
    assert tables.models["params_b"].tolist() == [2.0]
    assert len(build_bench(tables, tmp_path / "bench").images) == 6


def test_vlmevalkit_refuses_pickles_and_empty_trees(tmp_path: Path) -> None:
    run = tmp_path / "out" / "m-7b"
    run.mkdir(parents=True)
    (run / "m-7b_Data_openai_result.pkl").write_bytes(b"\x80\x04not really")
    with pytest.raises(ReaderError, match="pickle files are not read"):
        READERS.get("vlmevalkit")(tmp_path / "out", tmp_path / "staging")
    with pytest.raises(ReaderError, match="no VLMEvalKit per-sample"):
        READERS.get("vlmevalkit")(tmp_path / "staging", tmp_path / "s2")


def test_lmms_eval_legacy_layout_and_filters(tmp_path: Path) -> None:
    run = tmp_path / "0410_model_outputs_llava_model_args_abc123"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "config": {"model_args": "pretrained=liuhaotian/llava-v1.5-7b"},
        "configs": {"mme": {"metric_list": [{"metric": "mme_score"}],
                            "score_key": "score"}}}))
    logs = [{"doc_id": 1, "target": "Yes", "filtered_resps": ["Yes"],
             "mme_score": {"score": 1.0, "category": "x"}},
            {"doc_id": 0, "target": "No", "filtered_resps": ["Yes"], "mme_score": {"acc": 0}},
            {"doc_id": 0, "target": "No", "filtered_resps": ["No"], "mme_score": {"acc": 1}},
            {"doc_id": 2, "target": "No", "filtered_resps": ["?"], "mme_score": {"x": 1}}]
    (run / "mme.json").write_text(json.dumps({"args": {}, "logs": logs}))
    tables = READERS.get("lmms_eval")(tmp_path, tmp_path / "staging")
    assert tables.outcomes["model"].unique().tolist() == ["liuhaotian/llava-v1.5-7b"]
    assert dict(zip(tables.outcomes["sample_id"], tables.outcomes["score"], strict=True)) == \
        {"mme/0": 0.0, "mme/1": 1.0}
    assert "1 unscored, 1 repeated" in tables.report[0]


def test_lmms_eval_scores_outside_unit_range_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "org__m"
    folder.mkdir()
    (folder / "20260101_000000_results.json").write_text(json.dumps(
        {"model_name": "org/m", "configs": {"t": {"metric_list": [{"metric": "total"}]}}}))
    (folder / "20260101_000000_samples_t.jsonl").write_text(
        json.dumps({"doc_id": 0, "total": 4}) + "\n")
    with pytest.raises(ReaderError, match=r"line 1: per-sample score 4.0"):
        READERS.get("lmms_eval")(tmp_path, tmp_path / "staging")


def test_long_format_csv_and_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "sample_id": ["a", "a", "b", "b"], "model": ["m-2b", "api", "m-2b", "api"],
        "score": [1, 0, 0, 1], "group": ["g", "g", "h", "h"],
        "question": ["What?", "What?", "Why?", "Why?"], "params_b": [2, None, 2, None],
        "latency_s": [0.5, None, None, None]})
    frame.to_csv(tmp_path / "runs.csv", index=False)
    frame.to_parquet(tmp_path / "runs.parquet", index=False)
    for reader in ("csv", "parquet"):
        tables = READERS.get(reader)(tmp_path / f"runs.{reader}", tmp_path)
        assert tables.samples["sample_id"].tolist() == ["a", "b"]
        assert tables.models["open_weights"].tolist() == [True, False]
        bench = build_bench(tables, tmp_path / f"bench-{reader}")
        assert bench.records["latency_s"].iloc[0] == 0.5
        assert bench.matrices().quality.tolist() == [[1, 0], [0, 1]]


@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"sample_id": ["a"], "model": ["m"]}), "missing column"),
    (pd.DataFrame({"sample_id": ["a", "b"], "model": ["m", "m"], "score": [1, 3]}),
     r"row 3: 'score' is 3"),
    (pd.DataFrame({"sample_id": ["a", "a"], "model": ["m", "n"], "score": [1, 0],
                   "group": ["g", "h"]}), "several groups"),
])
def test_long_format_errors_name_the_row(tmp_path: Path, frame: pd.DataFrame,
                                         message: str) -> None:
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ReaderError, match=message) as info:
        READERS.get("csv")(tmp_path / "bad.csv", tmp_path)
    assert "bad.csv" in str(info.value)
