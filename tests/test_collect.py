"""``vlroute collect`` against the dev stand-ins on a real DynaMath subset: measured fields,
retries, a spend cap, failures, resuming after a real kill, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from tests._collect_env import (
    answered,
    backends_yaml,
    dynamath_subset,
    outcomes,
    run_cli,
    set_fault,
    stand_ins,
)
from tests._process import CLI
from vlroute.cli import cli
from vlroute.serve.dev_answers import WRONG, request_key


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("collect")
    subset = dynamath_subset(root / "set")
    with stand_ins(subset, root / "stand-ins.log") as ports:
        yield {"set": subset, "ports": ports, "config": backends_yaml(root / "b.yaml", ports)}


def keys(subset: Path) -> dict[str, str]:
    """sample_id -> request key, as the stand-ins count them."""
    out = {}
    for line in (subset / "samples.jsonl").read_text("utf-8").splitlines():
        row = json.loads(line)
        out[row["sample_id"]] = request_key(row["question"], [
            (subset / p).read_bytes() for p in row["images"]])
    return out


def test_collect_records_measured_answers_with_retries(env: dict, tmp_path: Path) -> None:
    ports = env["ports"]
    set_fault(ports["edge"], status=429, every=4, accuracy=0.25)
    set_fault(ports["cloud"], mode="bad_usage", every=5, accuracy=0.9,
              latency={"median_s": 0.01, "sigma": 0.5})
    run = tmp_path / "run"
    out = run_cli("collect", env["set"], "--backends", env["config"], "--out", run,
                  "--backoff", "0.05")
    assert "48 call(s) made, 0 failed" in out
    rows = outcomes(run)
    assert len(rows) == 48 and all(r["score"] is None and r["error"] is None for r in rows)
    by_model = {m: [r for r in rows if r["model"] == m] for m in ("edge-2b", "cloud-72b")}
    assert sum(r["attempts"] > 1 for r in by_model["edge-2b"]) >= 5       # its 429s, retried
    assert all(r["response"] and r["latency_s"] > 0 and r["ttft_s"] is not None for r in rows)
    edge = by_model["edge-2b"]
    # the edge's config gives no prices: its cost is not measured (not $0)
    assert all(r["cost_usd"] is None and r["energy_j"] == pytest.approx(20 * r["latency_s"],
                                                                        rel=1e-3) for r in edge)
    cloud = by_model["cloud-72b"]
    priced = [r for r in cloud if r["tokens_in"] is not None]
    assert 0 < len(priced) < len(cloud)                    # bad usage: no measured cost
    assert all(r["cost_usd"] == pytest.approx((r["tokens_in"] + 4 * r["tokens_out"]) / 1e6)
               for r in priced)
    assert all(r["cost_usd"] is None for r in cloud if r["tokens_in"] is None)
    right = {m: sum(r["response"] != WRONG for r in rs) for m, rs in by_model.items()}
    assert right["cloud-72b"] > right["edge-2b"]
    for name in ("edge", "cloud"):                         # each sample answered once
        assert sorted(answered(ports[name]).values()) == [1] * 24
    summary = json.loads((run / "run.json").read_text())
    assert summary["backends"]["edge"]["energy_from"] == "power_w 20 W x measured latency"
    assert summary["backends"]["cloud"]["latency_s"]["p50"] > 0
    again = run_cli("collect", env["set"], "--backends", env["config"], "--out", run)
    assert "0 call(s) made" in again and "48 already recorded" in again
    assert outcomes(run) == rows
    refused = CliRunner().invoke(cli, ["bench", "build", str(run), "--out",
                                       str(tmp_path / "bench")])
    assert refused.exit_code == 1 and "all 48 outcomes are unscored (score null); score " \
        "them first (`vlroute judge run`)" in refused.output


def test_a_killed_run_resumes_without_repeating_recorded_calls(env: dict,
                                                               tmp_path: Path) -> None:
    ports = env["ports"]
    for name in ("edge", "cloud"):
        set_fault(ports[name], latency={"median_s": 0.15})
    run = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "collect", str(env["set"]), "--backends",
                             str(env["config"]), "--out", str(run), "--concurrency", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = run / "journal.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if journal.is_file() and sum(json.loads(line)["event"] == "done" for line in
                                     journal.read_text().splitlines()[:-1]) >= 16:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = [json.loads(line) for line in journal.read_text().splitlines()
             if line.endswith("}")]                     # a line torn by the kill is cut
    done_before = {e["key"] for e in lines if e["event"] == "done"}
    in_flight = {e["key"] for e in lines if e["event"] == "start"} - done_before
    assert 16 <= len(done_before) < 48 and in_flight
    out = run_cli("collect", env["set"], "--backends", env["config"], "--out", run)
    assert f"{len(in_flight)} in flight when the last run stopped" in out
    assert f"{len(done_before)} already recorded" in out
    rows = outcomes(run)
    assert len(rows) == 48 and all(r["response"] for r in rows)
    ids = keys(env["set"])
    for name, model in (("edge", "edge-2b"), ("cloud", "cloud-72b")):
        counts = answered(ports[name])
        assert set(counts) == set(ids.values())            # nothing lost
        for sid, key in ids.items():
            if f"{name}\t{sid}" in done_before:
                assert counts[key] == 1, (name, sid)       # recorded: never called again
            else:
                assert counts[key] <= 1 + (f"{name}\t{sid}" in in_flight)
        assert {r["sample_id"] for r in rows if r["model"] == model} == set(ids)


def test_a_spend_cap_stops_cleanly_and_a_higher_one_goes_on(env: dict, tmp_path: Path) -> None:
    ports = env["ports"]
    for name in ("edge", "cloud"):
        set_fault(ports[name])
    run = tmp_path / "run"
    # a cloud call is held at (~40 + 765 image tokens) x $1 + 16 x $4 per 1M, ~$0.00087,
    # and costs (10 x $1 + ~10 x $4) per 1M: the cap lets a few calls through
    out = run_cli("collect", env["set"], "--backends", env["config"], "--out", run,
                  "--only", "cloud", "--max-tokens", "16", "--spend-cap", "0.0012",
                  "--concurrency", "1")
    assert "Stopped early: spend cap $0.0012 reached" in out
    first = outcomes(run)
    assert 1 <= len(first) < 24
    # one call at a time, in the set's order: each was let through only while the spend so
    # far plus its estimate stayed under the cap, and the next one would have passed it
    from vlroute.collect.run import estimate_usd
    from vlroute.collect.samples import read_samples
    from vlroute.serve.config import load_config

    cloud = load_config(env["config"]).backends[1]
    estimates = [estimate_usd(s, cloud, 16) for s in read_samples(env["set"]).samples]
    booked = [json.loads(line)["spend_usd"] for line in (run / "journal.jsonl").read_text(
        ).splitlines() if '"done"' in line]
    assert len(booked) == len(first)
    for i, estimate in enumerate(estimates[:len(booked)]):
        assert sum(booked[:i]) + estimate <= 0.0012
    assert sum(booked) + estimates[len(booked)] > 0.0012
    assert sum(booked) <= 0.0012 and sum(booked) == pytest.approx(sum(
        r["cost_usd"] for r in first))
    run_cli("collect", env["set"], "--backends", env["config"], "--out", run, "--only",
            "cloud", "--max-tokens", "16")
    assert len(outcomes(run)) == 24
    assert sorted(answered(ports["cloud"]).values()) == [1] * 24


def test_failed_calls_are_recorded_and_retried_only_when_asked(env: dict,
                                                               tmp_path: Path) -> None:
    ports = env["ports"]
    set_fault(ports["edge"], status=500)
    set_fault(ports["cloud"], mode="slow", delay_s=3)     # past the config's 0.4 s timeout
    run = tmp_path / "run"
    config = backends_yaml(tmp_path / "b.yaml", ports, timeout_s=0.4)
    out = run_cli("collect", env["set"], "--backends", config, "--out", run,
                  "--limit", "2", "--retries", "1", "--backoff", "0.05")
    assert "4 call(s) made, 4 failed" in out
    rows = outcomes(run)
    assert {(r["status"], r["attempts"]) for r in rows if r["model"] == "edge-2b"} == {(500, 2)}
    assert all(r["error"].startswith("HTTP 500") for r in rows if r["model"] == "edge-2b")
    assert all(r["status"] is None and "no answer" in r["error"]
               for r in rows if r["model"] == "cloud-72b")
    assert all(r["response"] is None and r["score"] is None for r in rows)
    set_fault(ports["edge"])
    again = run_cli("collect", env["set"], "--backends", config, "--out", run,
                    "--limit", "2", "--only", "edge")
    assert "0 call(s) made" in again
    run_cli("collect", env["set"], "--backends", config, "--out", run, "--limit", "2",
            "--only", "edge", "--retry-errors")
    rows = outcomes(run)
    assert all(r["response"] for r in rows if r["model"] == "edge-2b")
    assert sum(r["model"] == "cloud-72b" for r in rows) == 2     # --only keeps the others'
    one = run_cli("collect", env["set"], "--backends", config, "--out", run, "--limit", "1",
                  "--only", "edge")
    assert "0 call(s) made" in one and len(outcomes(run)) == 4    # and --limit the rest


def test_a_backend_without_vision_is_never_sent_images(env: dict, tmp_path: Path) -> None:
    ports = env["ports"]
    for name in ("edge", "cloud"):
        set_fault(ports[name])
    config = tmp_path / "b.yaml"
    head, _, tail = env["config"].read_text().rpartition("timeout_s: 2.0}")
    config.write_text(head + "timeout_s: 2.0, vision: false}" + tail)     # the cloud only
    out = run_cli("collect", env["set"], "--backends", config, "--out", tmp_path / "run",
                  "--limit", "3")
    assert "3 sample(s) with images not sent to a backend with vision: false" in out
    assert {r["model"] for r in outcomes(tmp_path / "run")} == {"edge-2b"}
    assert answered(ports["cloud"]) == {}


@pytest.mark.parametrize(("args", "message"), [
    (["collect", "{tmp}", "--backends", "{config}", "--out", "{tmp}/run"],
     "expected a set folder holding samples.jsonl"),
    (["collect", "{set}", "--backends", "{tmp}/bad.yaml", "--out", "{tmp}/run"],
     "backends.0.base_url"),
    (["collect", "{set}", "--backends", "{config}", "--out", "{tmp}/run", "--only", "gpu"],
     "unknown backend 'gpu'; the config has edge, cloud"),
    (["collect", "{set}", "--backends", "{tmp}/twice.yaml", "--out", "{tmp}/run"],
     "backends a, b stand for one model (router_model)"),
    (["collect", "{set}", "--backends", "{config}", "--out", "{tmp}/run", "--share", "0"],
     "Invalid value for '--share'"),
])
def test_bad_input_is_one_line_naming_it(env: dict, tmp_path: Path, args: list[str],
                                         message: str) -> None:
    (tmp_path / "bad.yaml").write_text("backends: [{name: x, base_url: ftp://h, model: m}]\n")
    (tmp_path / "twice.yaml").write_text(
        "backends: [{name: a, base_url: 'http://h/v1', model: m, router_model: M},\n"
        "           {name: b, base_url: 'http://h/v1', model: m, router_model: M}]\n")
    filled = [a.format(tmp=tmp_path, set=env["set"], config=env["config"]) for a in args]
    result = CliRunner().invoke(cli, filled)
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert result.exit_code != 0 and len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.output


def test_a_bench_is_a_source_too(env: dict, tmp_path: Path) -> None:
    ports = env["ports"]
    for name in ("edge", "cloud"):
        set_fault(ports[name])
    from conftest import make_set

    run_cli("bench", "build", make_set(tmp_path / "toy"), "--out", tmp_path / "bench")
    run = tmp_path / "run"
    run_cli("collect", tmp_path / "bench", "--backends", env["config"], "--out", run,
            "--limit", "3")
    rows = outcomes(run)
    assert len(rows) == 6 and all(r["response"] for r in rows)
    samples = (run / "samples.jsonl").read_text().splitlines()
    assert all((run / json.loads(s)["images"][0]).is_file() for s in samples)


def test_the_journal_cuts_a_torn_line_and_has_one_writer(tmp_path: Path) -> None:
    from vlroute.collect.journal import Journal, JournalError

    path = tmp_path / "journal.jsonl"
    path.write_text('{"event": "start", "key": "a"}\n{"event": "done", "key": "a", "x": 1}\n'
                    '{"event": "start", "key": "b"}\n{"event": "done", "ke')
    journal = Journal(path)
    assert set(journal.done) == {"a"} and journal.in_flight == {"b"}
    assert path.read_text().endswith('"key": "b"}\n')                # the torn line is gone
    with pytest.raises(JournalError, match="another process is writing this journal"):
        Journal(path)
    journal.close()
    path.write_text("[1]\n")
    with pytest.raises(JournalError, match="line 1: not a journal entry"):
        Journal(path)


@pytest.mark.parametrize(("fault", "stream"), [
    ({"mode": "malformed", "every": 2}, True),            # a 200 that is not JSON
    ({"mode": "cut_stream", "after_chunks": 2, "every": 2}, True),
    ({"mode": "cut_stream", "every": 2}, False),          # a JSON body cut half-way
    ({"status": 503, "every": 2}, False),
])
def test_broken_answers_are_retried_until_whole(env: dict, tmp_path: Path,
                                                fault: dict[str, object], stream: bool) -> None:
    ports = env["ports"]
    set_fault(ports["edge"], **fault)
    run = tmp_path / "run"
    out = run_cli("collect", env["set"], "--backends", env["config"], "--out", run, "--only",
                  "edge", "--limit", "4", "--concurrency", "1", "--backoff", "0.01",
                  *([] if stream else ["--no-stream"]))
    assert "4 call(s) made, 0 failed" in out
    rows = outcomes(run)
    assert all(r["response"] and r["error"] is None for r in rows)
    # requests 2, 4, 6 are broken: samples 2-4 take a second attempt
    assert sorted(r["attempts"] for r in rows) == [1, 2, 2, 2]
    assert all((r["ttft_s"] is not None) == stream for r in rows)


def test_a_recorded_result_for_another_request_is_called_again(env: dict,
                                                               tmp_path: Path) -> None:
    ports = env["ports"]
    for name in ("edge", "cloud"):
        set_fault(ports[name])
    subset = tmp_path / "set"
    subset.mkdir()
    (subset / "images").symlink_to(env["set"] / "images")
    lines = (env["set"] / "samples.jsonl").read_text().splitlines()[:3]
    (subset / "samples.jsonl").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    run_cli("collect", subset, "--backends", env["config"], "--out", run)
    assert len(outcomes(run)) == 6
    # the edge backend now points at another upstream model: its results are not reused
    config = tmp_path / "b.yaml"
    config.write_text(env["config"].read_text().replace("model: small,", "model: small-v2,"))
    again = run_cli("collect", subset, "--backends", config, "--out", run)
    assert "3 call(s) made" in again and "3 already recorded" in again
    assert "3 recorded result(s) were for another request" in again
    assert sorted(answered(ports["edge"]).values()) == [2] * 3
    assert sorted(answered(ports["cloud"]).values()) == [1] * 3
    # a changed question is another request too, for every backend
    row = json.loads(lines[0])
    row["question"] += " Answer briefly."
    (subset / "samples.jsonl").write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    assert "2 recorded result(s) were for another request" in run_cli(
        "collect", subset, "--backends", config, "--out", run)
    # a backend not called this time keeps no result of another request in outcomes.jsonl
    config.write_text(config.read_text().replace("model: big,", "model: big-v2,"))
    out = run_cli("collect", subset, "--backends", config, "--out", run, "--only", "edge")
    assert "0 call(s) made" in out and "3 recorded result(s) for another request left " \
        "out of outcomes.jsonl" in out
    assert {r["model"] for r in outcomes(run)} == {"edge-2b"}
    # a journal written before fingerprints (none recorded) still resumes as recorded
    journal = run / "journal.jsonl"
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps({k: v for k, v in e.items() if k != "fingerprint"})
                               + "\n" for e in entries))
    old = run_cli("collect", subset, "--backends", config, "--out", run)
    assert "0 call(s) made" in old and "6 already recorded" in old
    assert len(outcomes(run)) == 6


def test_a_set_folder_is_never_overwritten_by_collect_or_judge(env: dict,
                                                               tmp_path: Path) -> None:
    from conftest import write_jsonl

    subset = tmp_path / "set"
    subset.mkdir()
    (subset / "images").symlink_to(env["set"] / "images")
    lines = (env["set"] / "samples.jsonl").read_text().splitlines()[:2]
    (subset / "samples.jsonl").write_text("\n".join(lines) + "\n")
    write_jsonl(subset / "outcomes.jsonl", [
        {"sample_id": json.loads(line)["sample_id"], "model": "theirs", "score": 1.0,
         "response": "7"} for line in lines])
    before = (subset / "outcomes.jsonl").read_bytes()
    result = CliRunner().invoke(cli, ["collect", str(subset), "--backends",
                                      str(env["config"]), "--out", str(subset)])
    assert result.exit_code == 1 and len(result.output.split("\n")) == 3   # under the bar
    assert f"{subset} holds a set (outcomes.jsonl) but is not a collect run" in " ".join(
        result.output.split())
    assert not (subset / "journal.jsonl").exists()
    judge = tmp_path / "j.yaml"
    judge.write_text("judge: {name: j, base_url: 'http://127.0.0.1:1/v1', model: m}\n")
    for args in (["judge", "run", str(subset), "--judge", str(judge)],
                 ["judge", "reference", str(subset)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and result.output.strip().count("\n") == 0
        assert "is not a collect run (no run.json)" in result.output
        assert "--in-place" in result.output
    assert (subset / "outcomes.jsonl").read_bytes() == before
    assert "2 of 2 outcome(s) scored" in run_cli("judge", "reference", subset, "--in-place")


class _Priced:
    """An in-process backend whose usage exceeds collect's estimate: 200 prompt tokens for a
    40-character question, and every third request answered 500 first (then retried). It
    keeps the ledger of what each attempt may be billed: usage at the backend's prices, or
    the call's estimate for an attempt without usage (collect's rule)."""

    def __init__(self, estimate: float) -> None:
        self.estimate, self.ledger, self.requests, self.in_flight, self.most = (
            estimate, 0.0, 0, 0, 0)

    async def post(self, url: str, payload: bytes, headers: dict[str, str],
                   timeout_s: float) -> object:
        import asyncio

        self.requests += 1
        n = self.requests
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.001 * (n % 5))
        self.in_flight -= 1
        failed = n % 3 == 0
        self.ledger += self.estimate if failed else (200 * 1.0 + 16 * 4.0) / 1e6
        body = (b'{"error": {"message": "busy"}}' if failed else json.dumps({
            "choices": [{"message": {"content": "4"}}],
            "usage": {"prompt_tokens": 200, "completion_tokens": 16}}).encode())

        class Answer:
            status = 500 if failed else 200
            headers: ClassVar[dict[str, str]] = {"content-type": "application/json"}

            async def read(self) -> bytes:
                return body

            def release(self) -> None:
                pass

        return Answer()

    async def close(self) -> None:
        pass


def test_the_spend_cap_books_every_billed_attempt_and_bounds_the_overshoot(
        tmp_path: Path) -> None:
    from vlroute.collect.calls import RetryPolicy
    from vlroute.collect.run import CollectOptions, collect, estimate_usd
    from vlroute.collect.samples import Sample, SampleSet
    from vlroute.serve.config import Backend

    samples = SampleSet("s", [Sample(f"q{i:03d}", "x" * 40, None, (), tmp_path)
                              for i in range(100)], {}, tmp_path)
    backend = Backend(name="cloud", base_url="http://fake/v1", model="m",
                      price_in_per_1m=1.0, price_out_per_1m=4.0)
    estimate = estimate_usd(samples.samples[0], backend, 16)
    assert estimate == pytest.approx((10 + 16 * 4.0) / 1e6)
    wire = _Priced(estimate)
    cap = 0.002
    report = collect(samples, [backend], tmp_path / "run", transport=wire,  # type: ignore[arg-type]
                     options=CollectOptions(max_tokens=16, stream=False, spend_cap_usd=cap,
                                            concurrency=4,
                                            retry=RetryPolicy(retries=2, base_s=0)))
    assert wire.most == 4 and report.stopped and report.made < 100
    # every attempt the server may bill is booked: the retried 500s at their estimate
    assert report.spent_usd == pytest.approx(wire.ledger)
    journal = [json.loads(line) for line in (tmp_path / "run" / "journal.jsonl"
                                              ).read_text().splitlines()]
    booked = [e["spend_usd"] for e in journal if e["event"] == "done"]
    assert sum(booked) == pytest.approx(report.spent_usd)
    # the usage passes the estimate, so the cap is passed, by at most the excess of the calls
    # in flight when the last one was let through: at concurrency 4, the 4 largest
    excess = sorted((b - estimate for b in booked), reverse=True)
    assert cap < report.spent_usd <= cap + sum(excess[:4]) + 1e-12
    # and a run again under the same cap makes no call
    again = collect(samples, [backend], tmp_path / "run", transport=_Priced(estimate),  # type: ignore[arg-type]
                    options=CollectOptions(max_tokens=16, stream=False, spend_cap_usd=cap,
                                           concurrency=4))
    assert again.made == 0 and again.stopped
    assert again.spent_usd == pytest.approx(report.spent_usd)


def test_the_estimate_applies_the_catalogs_image_rule_to_the_image_size(env: dict) -> None:
    import numpy as np
    from PIL import Image

    from vlroute.collect.run import estimate_usd
    from vlroute.collect.samples import read_samples
    from vlroute.costs.image_tokens import BUILTIN_RULES
    from vlroute.serve.config import Backend

    sample = read_samples(env["set"]).samples[0]
    with Image.open(sample.image_paths()[0]) as image:
        w, h = image.size
    base = {"name": "c", "base_url": "http://h/v1", "model": "m", "price_in_per_1m": 1.0}
    text = -(-len(sample.question) // 4)
    for rule in ("qwen2-vl", "openai-4o", "claude"):
        tokens = int(BUILTIN_RULES[rule](np.array([w * 1.0]), np.array([h * 1.0]))[0])
        assert tokens != 765
        backend = Backend.model_validate({**base, "image_tokens": rule})
        assert estimate_usd(sample, backend, 0) == pytest.approx((text + tokens) / 1e6)
    assert estimate_usd(sample, Backend.model_validate({**base, "image_tokens": 100}), 0
                        ) == pytest.approx((text + 100) / 1e6)
    assert estimate_usd(sample, Backend.model_validate(base), 0) == pytest.approx(
        (text + 765) / 1e6)


def test_the_journal_keeps_replaced_and_lost_calls(tmp_path: Path) -> None:
    from vlroute.collect.journal import Journal

    path = tmp_path / "journal.jsonl"
    path.write_text(
        '{"event": "start", "key": "a", "estimate_usd": 1}\n'
        '{"event": "done", "key": "a", "spend_usd": 2}\n'
        '{"event": "start", "key": "a", "estimate_usd": 1}\n'
        '{"event": "done", "key": "a", "spend_usd": 3}\n'
        '{"event": "start", "key": "b", "estimate_usd": 4}\n'
        '{"event": "start", "key": "b", "estimate_usd": 5}\n')
    journal = Journal(path)
    assert journal.done["a"]["spend_usd"] == 3
    assert [e["spend_usd"] for e in journal.replaced] == [2]
    assert [e["estimate_usd"] for e in journal.lost] == [4, 5]
    assert journal.in_flight == {"b"}
    journal.close()


def test_loop_run_passes_its_spend_cap_to_collect(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import vlroute.collect.loop as loop

    seen: dict[str, object] = {}

    def turn(config: object, judge: object, work: Path, **kw: object) -> dict[str, object]:
        seen.update(kw)
        raise loop.LoopError("stop here")

    monkeypatch.setattr(loop, "run_turn", turn)
    config = tmp_path / "g.yaml"
    config.write_text("backends: [{name: a, base_url: 'http://h/v1', model: m}]\n")
    judge = tmp_path / "j.yaml"
    judge.write_text("judge: {name: j, base_url: 'http://h/v1', model: m}\n")
    result = CliRunner().invoke(cli, ["loop", "run", "--config", str(config), "--judge",
                                      str(judge), "--work", str(tmp_path / "w"),
                                      "--spend-cap", "2.5"])
    assert "stop here" in result.output
    assert seen["options"].spend_cap_usd == 2.5                  # type: ignore[attr-defined]


def test_a_backend_without_prices_has_no_measured_cost(env: dict, tmp_path: Path) -> None:
    import yaml

    from vlroute.data import load_bench

    ports = env["ports"]
    for name in ("edge", "cloud"):
        set_fault(ports[name])
    free = tmp_path / "free.yaml"            # the edge with prices given as 0: free, measured
    free.write_text(env["config"].read_text().replace(
        "power_w: 20,", "power_w: 20, price_in_per_1m: 0, price_out_per_1m: 0,"))
    for config, cost in ((env["config"], None), (free, 0.0)):
        run = tmp_path / f"run-{cost}"
        out = run_cli("collect", env["set"], "--backends", config, "--out", run, "--limit",
                      "4")
        assert ("No prices in the config for edge" in out) == (cost is None)
        edge = [r for r in outcomes(run) if r["model"] == "edge-2b"]
        assert len(edge) == 4 and all(r["cost_usd"] == cost for r in edge)
        entry = yaml.safe_load((run / "costs.yaml").read_text())["models"]["edge-2b"]
        assert entry["tier"] == "edge" and ("price" in entry) == (cost is not None)
        run_cli("judge", "reference", run)
        run_cli("bench", "build", run, "--out", tmp_path / f"bench-{cost}")
        bench = load_bench(tmp_path / f"bench-{cost}")
        models = list(bench.models["model"])
        records = bench.records[bench.records["model_idx"] == models.index("edge-2b")]
        assert len(records) == 4
        # the bench estimates the unpriced backend's cost from the catalog, not $0 measured
        assert bool(records["cost_usd_estimated"].all()) == (cost is None)
        assert (records["cost_usd"] > 0).all() == (cost is None)


def test_scores_are_kept_for_responses_with_unicode_line_separators(tmp_path: Path) -> None:
    from vlroute.collect.outputs import _keep_scores, write_jsonl

    texts = ["one\u2028two", "three\u0085four", "five\u2029six\x1c"]
    rows = [{"sample_id": f"s{i}", "model": "m", "response": t, "score": None,
             "request_sha256": "f"} for i, t in enumerate(texts)]
    path = tmp_path / "outcomes.jsonl"
    write_jsonl(path, [{**r, "score": 0.7, "raw_score": 7, "judge": {"model": "j"}}
                       for r in rows])
    assert "\u2028" in path.read_text("utf-8")              # written raw (ensure_ascii off)
    kept = _keep_scores(path, rows)
    assert [r["raw_score"] for r in kept] == [7, 7, 7]
    assert [r["score"] for r in _keep_scores(path, [{**rows[0], "request_sha256": "g"}])
            ] == [None]                                      # another request: not kept


def test_collect_and_judge_hold_one_lock_on_the_run_folder(env: dict, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import vlroute.collect.run as collect_run
    from vlroute.collect.journal import JournalError, lock_run

    ports = env["ports"]
    for name in ("edge", "cloud"):
        set_fault(ports[name])
    run = tmp_path / "run"
    real, held = collect_run.write_run, []

    def write_run(out: Path, *args: object, **kw: object) -> object:
        try:                                   # another writer now: refused
            with lock_run(out):
                held.append(False)
        except JournalError:
            held.append(True)
        return real(out, *args, **kw)          # type: ignore[arg-type]

    monkeypatch.setattr(collect_run, "write_run", write_run)
    run_cli("collect", env["set"], "--backends", env["config"], "--out", run, "--limit", "2")
    assert held == [True]                     # the lock is held while outcomes are written
    monkeypatch.setattr(collect_run, "write_run", real)
    judge = tmp_path / "j.yaml"
    judge.write_text("judge: {name: j, base_url: 'http://127.0.0.1:1/v1', model: m}\n")
    with lock_run(run):                       # a collect (or judge) of the folder going on
        for args in (["judge", "run", str(run), "--judge", str(judge)],
                     ["judge", "reference", str(run)],
                     ["collect", str(env["set"]), "--backends", str(env["config"]), "--out",
                      str(run)]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 1, result.output
            assert "another vlroute collect or judge is writing this run folder" in " ".join(
                result.output.split())
    assert "4 of 4 outcome(s) scored" in run_cli("judge", "reference", run)


def test_the_payload_is_the_serialised_body_byte_for_byte(tmp_path: Path) -> None:
    import orjson

    from vlroute.collect.samples import Sample, chat_body, chat_payload

    (tmp_path / "a.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 40)
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8" * 333)
    for question in ['a "quoted" \u00e9\n question', "@vlroute-image-slot-0@ in the text", ""]:
        for images in [(), ("a.png",), ("a.png", "b.jpg"), ("b.jpg", "b.jpg")]:
            sample = Sample("s", question, None, images, tmp_path)
            for stream in (True, False):
                plain = orjson.dumps(chat_body(sample, "m", max_tokens=7, stream=stream))
                assert chat_payload(sample, "m", max_tokens=7, stream=stream) == plain


def test_a_stream_is_parsed_whole_with_the_first_tokens_arrival() -> None:
    from vlroute.collect.calls import parse_stream

    first = b'data: {"choices":[{"delta":{"role":"assistant"}}]}\r\n\r\n: keep-alive\n\n'
    second = (b'event: message\ndata: {"choices":[{"delta":{"content":"4"}}]}\n\n'
              b'data:{"choices":[{"delta":{"content":"2"}}],"usage":{"prompt_tokens":9,'
              b'"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    body = first + second
    result = parse_stream(body, [len(first), len(body)], [10.5, 11.0], 10.0, 1.25)
    assert (result.text, result.tokens, result.latency_s) == ("42", (9, 2), 1.25)
    assert result.ttft_s == pytest.approx(1.0)     # "4" came with the second piece
    cut = parse_stream(body[:-3], [len(body) - 3], [10.5], 10.0, 1.0)
    assert cut.error == "broken answer: the stream ended before [DONE]"
    bad = parse_stream(b"data: {oops\n\ndata: [DONE]\n\n", [10], [10.1], 10.0, 0.2)
    assert bad.error == "malformed answer: a stream event is not JSON"
    two = parse_stream(b"data: 1, 2\n\ndata: [DONE]\n\n", [10], [10.1], 10.0, 0.2)
    assert two.error == "malformed answer: a stream event is not JSON"
    failed = parse_stream(b'data: {"error": {"message": "overloaded"}}\n\ndata: [DONE]\n\n',
                          [10], [10.1], 10.0, 0.2)
    assert failed.error is not None and "overloaded" in failed.error
