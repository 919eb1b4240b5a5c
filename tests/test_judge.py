"""``vlroute judge run`` with the stub judge: strict parsing, malformed answers, the cache,
graded labels a bench builds on; the rubric's parser on its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests._collect_env import (
    backends_yaml,
    dynamath_subset,
    judge_yaml,
    outcomes,
    run_cli,
    set_fault,
    stand_ins,
)
from vlroute.cli import cli
from vlroute.collect.rubric import RUBRIC_VERSION, judge_prompt, parse_score
from vlroute.data import load_bench
from vlroute.data.answers import match_score
from vlroute.serve.dev_answers import sections


@pytest.mark.parametrize(("text", "score"), [
    ("Close enough.\nSCORE: 7", 7),
    ("score: 10", 10),
    ("**Score:** 3/10", 3),
    ("Fine.\n\nSCORE: 0\n", 0),
    ("SCORE: 7\nSCORE: 7", 7),
    ("Good answer.", None),                     # no score line
    ("SCORE: 11", None),                        # out of range
    ("SCORE: 6.5", None),                       # not an integer
    ("SCORE: 7\nbecause it is right", None),    # the score is not the last line
    ("Score: 3 at first.\nSCORE: 8", None),     # contradicts itself
    ("I'd say 8/10", None),
    ("", None),
])
def test_the_score_is_parsed_strictly_never_guessed(text: str, score: int | None) -> None:
    assert parse_score(text) == score


def test_the_prompt_carries_the_sections_the_stub_judge_reads() -> None:
    prompt = judge_prompt("What is 2+2?", "It is 4.", "4", image_hidden=True)
    assert sections(prompt) == {"[Question]": "What is 2+2?", "[Reference answer]": "4",
                                "[Response]": "It is 4."}
    assert "not shown to you" in prompt and prompt.endswith("SCORE: <integer from 0 to 10>.")
    assert "[Reference answer]" not in judge_prompt("Q?", "A", None, image_hidden=False)



@pytest.mark.parametrize(("reference", "response", "score"), [
    ("2.0944", "The answer is 2.0944", 10),
    ("2.0944", "2.0944 is wrong; it is 6.2832", 0),        # the last number counts
    ("1,000", "About 1000.", 10),
    ("5.0", "5", 10),
    ("B", "A is a trap, so (B)", 10),
    ("B", "B? No: a bigger one, D.", 0),
    ("A", "This is a triangle.", 0),                        # not the article
    ("Sep", "It is September", 0),
    ("Sep", "in Sep.", 10),
    ("right angle", "It is a right angle.", 10),
    ("a cat sits on a mat", "a cat sits on a mat", 10),
    ("a cat sits on a mat", "the dog runs", 0),
    ("a cat sits on a mat", "a dog runs", 2),               # F1 of one shared word
    ("4", "", 0),
])
def test_matching_the_reference_answer(reference: str, response: str, score: int) -> None:
    assert match_score(reference, response) == score


def test_the_doctests_hold() -> None:
    import doctest

    import vlroute.data.answers
    import vlroute.metrics.agreement

    for module in (vlroute.data.answers, vlroute.metrics.agreement):
        assert doctest.testmod(module).failed == 0


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("judge")
    subset = dynamath_subset(root / "set", n=16)
    with stand_ins(subset, root / "stand-ins.log") as ports:
        set_fault(ports["edge"], accuracy=0.3)
        set_fault(ports["cloud"], accuracy=0.9)
        run_cli("collect", subset, "--backends", backends_yaml(root / "b.yaml", ports),
                "--out", root / "run")
        yield {"run": root / "run", "ports": ports, "root": root}


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("samples.jsonl", "outcomes.jsonl", "models.jsonl", "set.json", "costs.yaml",
                 "journal.jsonl", "run.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    (dst / "images").symlink_to(src / "images")
    return dst


def test_scores_become_graded_labels_with_their_judge(collected: dict, tmp_path: Path) -> None:
    ports = collected["ports"]
    set_fault(ports["judge"], mode="malformed", every=3)  # every third answer: asked again
    run = copy_run(collected["run"], tmp_path / "run")
    config = judge_yaml(tmp_path / "judge.json", ports, concurrency=1)
    out = run_cli("judge", "run", run, "--judge", config)
    assert "32 of 32 outcome(s) scored by stub-judge" in out and "0 left unscored" in out
    assert "malformed answer(s) asked again" in out and " 0 malformed" not in out
    rows = outcomes(run)
    assert all(r["judge"]["model"] == "stub-judge" and r["judge"]["rubric"] == RUBRIC_VERSION
               for r in rows)
    assert all(r["raw_score"] in (0, 10) and r["score"] == r["raw_score"] / 10 for r in rows)
    for r in rows:                                     # the stub compares with the reference
        assert (r["raw_score"] == 10) == r["response"].startswith("The answer is")
    info = json.loads((run / "set.json").read_text())
    assert info["raw_scale"] == [0, 10] and info["judge"]["rubric"] == RUBRIC_VERSION
    again = run_cli("judge", "run", run, "--judge", config)
    assert "32 from the cache, 0 judge call(s)" in again
    run_cli("bench", "build", run, "--out", tmp_path / "bench")
    assert "0 error(s)" in run_cli("bench", "validate", tmp_path / "bench", "--decode-images")
    bench = load_bench(tmp_path / "bench")
    m = bench.matrices()
    assert bench.label == "graded" and m.quality.shape == (16, 2)
    edge, cloud = (list(m.models).index(x) for x in ("edge-2b", "cloud-72b"))
    assert m.quality[:, cloud].mean() > m.quality[:, edge].mean()
    assert not bench.records["latency_s_estimated"].any()     # measured, and labelled so
    described = run_cli("bench", "describe", tmp_path / "bench")
    assert "latency_s 100%" in described and "measured" in described


def test_a_judge_that_never_gives_a_score_leaves_responses_unscored(collected: dict,
                                                                   tmp_path: Path) -> None:
    ports = collected["ports"]
    set_fault(ports["judge"], mode="malformed")
    run = copy_run(collected["run"], tmp_path / "run")
    config = judge_yaml(tmp_path / "judge.json", ports, malformed_retries=1)
    out = run_cli("judge", "run", run, "--judge", config)
    assert "0 of 32 outcome(s) scored" in out and "32 left unscored" in out
    rows = outcomes(run)
    assert all(r["score"] is None and "malformed judge answer" in r["judge_error"]
               for r in rows)
    set_fault(ports["judge"])                          # unscored is not cached: asked again
    assert "32 of 32 outcome(s) scored" in run_cli("judge", "run", run, "--judge", config)


def test_scoring_against_the_reference_needs_no_judge(collected: dict, tmp_path: Path) -> None:
    run = copy_run(collected["run"], tmp_path / "run")
    out = run_cli("judge", "reference", run)
    assert "32 of 32 outcome(s) scored against the reference answer" in out
    rows = outcomes(run)
    assert all(r["judge"] == {"model": "reference-match", "rubric": "vlroute-reference/1"}
               for r in rows)
    for r in rows:
        assert (r["raw_score"] == 10) == r["response"].startswith("The answer is")
    again = run_cli("collect", run, "--backends", backends_yaml(tmp_path / "b.yaml",
                                                                collected["ports"]), "--out", run)
    assert "0 call(s) made" in again and outcomes(run) == rows   # the scores stay


@pytest.mark.parametrize(("config", "message"), [
    ("judge: [1]", "judge: Input should be a valid dictionary"),
    ("model: x", "expected a mapping with a 'judge' backend"),
    ("judge: {name: j, base_url: 'http://h/v1', model: m}\nmax_tokens: 1",
     "max_tokens: Input should be greater than or equal to 16"),
])
def test_a_bad_judge_config_is_one_line(collected: dict, tmp_path: Path, config: str,
                                        message: str) -> None:
    path = tmp_path / "judge.yaml"
    path.write_text(config)
    result = CliRunner().invoke(cli, ["judge", "run", str(collected["run"]), "--judge",
                                      str(path)])
    assert result.exit_code == 1 and message in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1


def test_a_judge_that_takes_images_is_shown_them(tmp_path: Path) -> None:
    from vlroute.collect.judge import JudgeConfig, cache_key, judge_body
    from vlroute.collect.samples import read_samples

    subset = dynamath_subset(tmp_path / "set", n=2)
    sample = read_samples(subset).samples[0]
    seeing = JudgeConfig.model_validate({"judge": {
        "name": "j", "base_url": "http://127.0.0.1:1/v1", "model": "vl", "vision": True}})
    blind = seeing.model_copy(update={"judge": seeing.judge.model_copy(
        update={"vision": False})})
    parts = judge_body(seeing, sample, "It is 3.")["messages"][1]["content"]
    assert parts[0]["type"] == "text" and "[Reference answer]" in parts[0]["text"]
    assert parts[1]["image_url"]["url"].startswith("data:image/webp;base64,")
    text = judge_body(blind, sample, "It is 3.")["messages"][1]["content"]
    assert isinstance(text, str) and "image that is not shown to you" in text
    assert cache_key(seeing, sample, "It is 3.") != cache_key(blind, sample, "It is 3.")
    assert cache_key(seeing, sample, "It is 3.") != cache_key(seeing, sample, "It is 4.")


class _Scripted:
    """A transport that answers the judge's calls from a list, and keeps the bodies."""

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.bodies = answers, []

    async def post(self, url: str, payload: bytes, headers: dict[str, str],
                   timeout_s: float) -> object:
        self.bodies.append(json.loads(payload))
        text = self.answers.pop(0)

        class Answer:
            status, headers = 200, {"content-type": "application/json"}

            async def read(self) -> bytes:
                return json.dumps({"choices": [{"message": {"content": text}}]}).encode()

            def release(self) -> None:
                pass

        return Answer()

    async def close(self) -> None:
        pass


def test_a_malformed_answer_is_asked_again_with_a_reminder(tmp_path: Path) -> None:
    from conftest import write_jsonl

    from vlroute.collect.judge import JudgeConfig, judge_run
    from vlroute.collect.rubric import REMINDER

    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "samples.jsonl", [{"sample_id": "s", "question": "2+2?", "answer": "4"}])
    write_jsonl(run / "outcomes.jsonl", [{"sample_id": "s", "model": "m", "score": None,
                                          "response": "4"}])
    config = JudgeConfig.model_validate({"judge": {
        "name": "j", "base_url": "http://127.0.0.1:1/v1", "model": "jm"}})
    wire = _Scripted(["Looks right to me.", "SCORE: 9"])
    report = judge_run(run, config, transport=wire,         # type: ignore[arg-type]
                       in_place=True)
    assert report.scored == 1 and report.malformed_answers == 1 and report.asked == 2
    first, second = wire.bodies
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    assert second["messages"][:2] == first["messages"]
    assert second["messages"][2]["content"] == "Looks right to me."
    assert second["messages"][3]["content"] == REMINDER
    assert outcomes(run)[0]["raw_score"] == 9
