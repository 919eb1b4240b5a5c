"""Judge-human agreement: the statistics on hand-checkable fixtures and against scipy /
scikit-learn, ``vlroute judge agree`` on a labelled fixture, and on Vibe-Eval's graded
scores (the reference labels) against the stub judge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_jsonl
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from tests._collect_env import judge_yaml, run_cli, stand_ins, vibe_subset
from vlroute.cli import cli
from vlroute.metrics.agreement import (
    agreement,
    bootstrap_interval,
    confusion_at_mes,
    mae,
    quadratic_kappa,
    spearman,
)

JUDGE = np.array([0, 5, 10, 10.0])
HUMAN = np.array([0, 5, 5, 10.0])


def test_the_statistics_by_hand() -> None:
    assert mae(JUDGE, HUMAN) == 1.25
    # observed mean squared difference 25/4; expected over independent pairs 31.25
    assert quadratic_kappa(JUDGE, HUMAN) == pytest.approx(1 - 6.25 / 31.25)
    assert confusion_at_mes(JUDGE, HUMAN, 6) == {"both": 1, "judge_only": 1, "human_only": 0,
                                                 "neither": 2}
    assert spearman(JUDGE, HUMAN) == pytest.approx(spearmanr(JUDGE, HUMAN).statistic)
    assert np.isnan(spearman(JUDGE, np.full(4, 3.0)))
    assert np.isnan(quadratic_kappa(np.full(4, 3.0), np.full(4, 3.0)))


def test_the_statistics_match_scipy_and_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    human = rng.integers(0, 11, 300)
    judge = np.clip(human + rng.integers(-3, 4, 300), 0, 10)
    assert spearman(judge, human) == pytest.approx(spearmanr(judge, human).statistic)
    assert quadratic_kappa(judge, human) == pytest.approx(cohen_kappa_score(
        judge, human, weights="quadratic", labels=list(range(11))))


def test_bootstrap_intervals_are_seeded_and_hold_the_value() -> None:
    rng = np.random.default_rng(2)
    human = rng.integers(0, 11, 80).astype(float)
    judge = np.clip(human + rng.normal(0, 2, 80), 0, 10)
    first = bootstrap_interval(spearman, judge, human, n_boot=200, seed=3)
    assert first == bootstrap_interval(spearman, judge, human, n_boot=200, seed=3)
    assert first[0] is not None and first[1] is not None
    assert first[0] < spearman(judge, human) < first[1]
    doc = agreement(judge, human, mes=6, n_boot=200)
    assert set(doc["metrics"]) == {"spearman", "quadratic_kappa", "mae", "solved_agreement"}
    assert sum(doc["confusion"].values()) == doc["n"] == 80
    with pytest.raises(ValueError, match="at least 2 scored pairs"):
        agreement(judge[:1], human[:1])


def judged_run(root: Path, scores: list[int]) -> Path:
    root.mkdir()
    write_jsonl(root / "outcomes.jsonl", [
        {"sample_id": f"s{i}", "model": "m", "score": s / 10, "raw_score": s,
         "response": "r", "judge": {"model": "j", "rubric": "vlroute-rubric/1"}}
        for i, s in enumerate(scores)])
    return root


def test_agree_maps_the_human_scale_explicitly_and_stores_it(tmp_path: Path) -> None:
    run = judged_run(tmp_path / "run", [0, 5, 10, 10, 2])
    human = tmp_path / "human.jsonl"
    write_jsonl(human, [{"sample_id": f"s{i}", "model": "m", "rating": r}
                        for i, r in enumerate([1, 3, 3, 5, None])])
    out = run_cli("judge", "agree", run, "--human", human, "--field", "rating", "--scale",
                  "1,5", "--mes", "6", "--bootstrap", "50")
    assert "(s - 1) * 2.5" in out
    doc = json.loads((run / "agreement.json").read_text())
    assert doc["mapping"] == {"from": [1.0, 5.0], "to": [0, 10], "formula": "(s - 1) * 2.5"}
    assert doc["n"] == 4 and doc["unmatched"] == {"judged": 1, "human": 0}
    assert doc["metrics"]["mae"]["value"] == 1.25            # the fixture above, mapped
    assert doc["judge"] == {"models": ["j"], "rubrics": ["vlroute-rubric/1"]}
    assert doc["confusion"] == {"both": 1, "judge_only": 1, "human_only": 0, "neither": 2}


@pytest.mark.parametrize(("rows", "args", "message"), [
    ([{"sample_id": "s0", "model": "m", "score": 7}], ["--scale", "1,5"],
     "'score' is 7, 15 on 0-10 after the mapping; check --scale"),
    ([{"sample_id": "s0", "model": "m", "score": "high"}], [],
     "'score' is 'high'; expected a number or null"),
    ([{"sample_id": "x", "model": "m", "score": 3}], [],
     "only 0 (sample_id, model) pair(s) in common"),
    ([], ["--scale", "5,1"], "HI must be greater than LO"),
    ([{"sample_id": "s0", "model": "m", "score": True}], [],
     "human.jsonl, line 1: 'score' is True; expected a number or null"),
    ([{"sample_id": "s0", "model": "m", "score": 3}, {"sample_id": "s1", "model": "m",
                                                      "score": 4},
      {"sample_id": "s0", "model": "m", "score": 5}], [],
     "human.jsonl, line 3: ('s0', 'm') is labelled again (first on line 1); expected one "
     "label per (sample_id, model)"),
    ([{"sample_id": "s0", "score": 3}], [],
     "human.jsonl, line 1: expected 'sample_id' and 'model' strings; got 's0' and None"),
    ([{"sample_id": "s0", "model": "m", "score": 3}, {"model": "m", "score": None}], [],
     "human.jsonl, line 2: expected 'sample_id' and 'model' strings"),
])
def test_bad_human_labels_are_one_line(tmp_path: Path, rows: list[dict[str, object]],
                                       args: list[str], message: str) -> None:
    run = judged_run(tmp_path / "run", [0, 5])
    human = tmp_path / "human.jsonl"
    write_jsonl(human, rows)
    result = CliRunner().invoke(cli, ["judge", "agree", str(run), "--human", str(human),
                                      *args])
    assert result.exit_code != 0 and message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if "Error" in line]) == 1


def test_the_stub_judge_against_vibe_eval_graded_scores(tmp_path: Path) -> None:
    run = vibe_subset(tmp_path / "vibe", n=30)
    human = tmp_path / "human.jsonl"
    human.write_bytes((run / "outcomes.jsonl").read_bytes())     # the original 1-5 scores
    with stand_ins(run, tmp_path / "stand-ins.log") as ports:
        run_cli("judge", "run", run, "--in-place", "--judge",
                judge_yaml(tmp_path / "j.json", ports, concurrency=8))
    out = run_cli("judge", "agree", run, "--human", human, "--field", "raw_score",
                  "--scale", "1,5", "--bootstrap", "200", "--out", tmp_path / "agree.json")
    assert "spearman" in out
    doc = json.loads((tmp_path / "agree.json").read_text())
    n_outcomes = len((run / "outcomes.jsonl").read_text().splitlines())
    assert doc["n"] == n_outcomes > 300 and doc["mapping"]["formula"] == "(s - 1) * 2.5"
    for stat in doc["metrics"].values():
        low, high = stat["ci"]
        assert low <= stat["value"] <= high
    # word overlap with one reference answer is a weak judge of free-form answers: it ranks
    # the responses in the humans' order a little better than chance, and no more
    assert 0 < doc["metrics"]["spearman"]["value"] < 0.6


def test_the_report_shows_an_agreement_attached_to_a_results_document(tmp_path: Path) -> None:
    from conftest import make_set

    from vlroute.data import READERS, build_bench
    from vlroute.evaluation.results import save_results
    from vlroute.evaluation.runner import EvalSpec, evaluate_bench
    from vlroute.scenarios import PRESETS

    root = make_set(tmp_path / "set", n_groups=8)
    bench = build_bench(READERS.get("jsonl")(root, tmp_path / ".w"), tmp_path / "bench")
    doc = evaluate_bench(bench, EvalSpec(routers=("oracle", "best_single_by_rank"),
                                         scenarios=(PRESETS["quality"],), seeds=1))
    results = tmp_path / "results.json"
    save_results(doc, results)
    run = judged_run(tmp_path / "run", [0, 5, 10, 10])
    human = tmp_path / "human.jsonl"
    write_jsonl(human, [{"sample_id": f"s{i}", "model": "m", "score": r}
                        for i, r in enumerate([1, 3, 3, 5])])
    for _ in range(2):                       # attached again: replaced, not repeated
        run_cli("judge", "agree", run, "--human", human, "--scale", "1,5", "--bootstrap",
                "50", "--results", results)
    assert len(json.loads(results.read_text())["agreement"]) == 1
    run_cli("report", results, "--out", tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert "Judge agreement with human labels" in html and "(s - 1) * 2.5" in html
    assert "data-statistic='mae'" in html and "data-value='1.25'" in html


def test_the_bootstrap_resamples_questions_not_responses(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    human = rng.integers(0, 11, 30).astype(float)
    judge = np.clip(human + rng.normal(0, 3, 30), 0, 10)
    # ten models answered each question alike: 300 pairs, but only 30 independent ones
    ids = [f"s{i:02d}" for i in range(30)]
    many_j, many_h, groups = np.repeat(judge, 10), np.repeat(human, 10), np.repeat(ids, 10)
    alone = bootstrap_interval(mae, judge, human, n_boot=300, seed=5)
    cluster = bootstrap_interval(mae, many_j, many_h, n_boot=300, seed=5, groups=groups)
    plain = bootstrap_interval(mae, many_j, many_h, n_boot=300, seed=5)
    assert cluster == pytest.approx(alone)             # as wide as 30 questions allow
    assert plain[1] - plain[0] < 0.5 * (cluster[1] - cluster[0])   # pairs: far too narrow
    with pytest.raises(ValueError, match="one label per pair"):
        bootstrap_interval(mae, judge, human, groups=ids[:3])
    # judge agree resamples by sample_id unless told otherwise, and says which
    run = tmp_path / "run"
    run.mkdir()
    human_file = tmp_path / "human.jsonl"
    write_jsonl(run / "outcomes.jsonl", [
        {"sample_id": s, "model": f"m{k}", "raw_score": float(j), "score": j / 10,
         "judge": {"model": "j", "rubric": "r"}} for s, j in zip(ids, judge, strict=True)
        for k in range(10)])
    write_jsonl(human_file, [{"sample_id": s, "model": f"m{k}", "score": float(h)}
                             for s, h in zip(ids, human, strict=True) for k in range(10)])
    widths = {}
    for unit in ("sample", "pair"):
        run_cli("judge", "agree", run, "--human", human_file, "--resample", unit,
                "--bootstrap", "300", "--seed", "5", "--out", tmp_path / f"{unit}.json")
        doc = json.loads((tmp_path / f"{unit}.json").read_text())
        low, high = doc["metrics"]["mae"]["ci"]
        widths[unit] = high - low
        assert doc["bootstrap"]["unit"] == ("group" if unit == "sample" else "pair")
    assert widths["pair"] < 0.5 * widths["sample"]
    assert widths["sample"] == pytest.approx(alone[1] - alone[0])


def test_kappa_is_scikit_learns_only_over_all_eleven_labels() -> None:
    # the documented equality holds with labels=range(11); without them scikit-learn weighs
    # by the rank among the values present (0, 2, 10 become 0, 1, 2), as the docs say
    judge = np.array([0, 2, 10, 2, 0, 10, 10, 2])
    human = np.array([0, 10, 10, 2, 2, 0, 10, 2])
    ours = quadratic_kappa(judge, human)
    assert ours == pytest.approx(cohen_kappa_score(judge, human, weights="quadratic",
                                                   labels=list(range(11))))
    assert abs(ours - cohen_kappa_score(judge, human, weights="quadratic")) > 0.01
