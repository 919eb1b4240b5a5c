"""``vlroute judge run``: score every response of a run folder 0-10 with an LLM judge behind
an OpenAI-compatible endpoint, with the versioned rubric of :mod:`.rubric`.

The judge config is YAML::

    judge:                       # one backend, as in a gateway config
      name: judge
      base_url: http://127.0.0.1:8000/v1
      model: Qwen/Qwen2.5-VL-72B-Instruct
      api_key_env: JUDGE_API_KEY # or null
      vision: true               # false: the judge is not shown the images
      max_concurrency: 8
      timeout_s: 120
    max_tokens: 256
    malformed_retries: 2         # a judge answer without a valid SCORE line is asked again

Each score is cached by a hash of what the judge saw (rubric version, judge model, question,
reference, response, image bytes) in the run's ``judge.jsonl`` (append-only, fsynced), so a
rerun asks nothing twice. A response still malformed after its retries is recorded as
unscored (``score: null`` with ``judge_error``), never guessed. Scores become graded labels:
``score`` = s / 10, ``raw_score`` = s, ``set.json`` says ``raw_scale`` [0, 10], and each
outcome keeps ``judge: {model, rubric, key}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vlroute._io import write_json_atomic
from vlroute._optional import require
from vlroute.collect.calls import RetryPolicy, chat, headers_for
from vlroute.collect.journal import Journal, lock_run
from vlroute.collect.outputs import write_jsonl
from vlroute.collect.rubric import (
    REMINDER,
    RUBRIC_VERSION,
    SYSTEM,
    judge_prompt,
    parse_score,
)
from vlroute.collect.samples import Sample, data_url, read_samples
from vlroute.data.answers import match_score
from vlroute.data.readers._checks import iter_jsonl, read_json_object
from vlroute.errors import VlrouteError
from vlroute.serve.config import Backend
from vlroute.serve.upstream import AiohttpTransport, Transport

CACHE = "judge.jsonl"
#: the "judge" of rule-based scoring against the reference answer, and its version
REFERENCE, REFERENCE_VERSION = "reference-match", "vlroute-reference/1"


class JudgeConfigError(VlrouteError):
    """The judge config is missing, malformed or inconsistent."""


class JudgeRunError(VlrouteError):
    """The folder to score is not a collect run and scoring in place was not asked for."""


def check_run(run: Path, in_place: bool) -> None:
    """Refuse to rewrite the outcomes of a folder that is not a collect run (no run.json)
    unless ``in_place``: a shared set's own outcomes would be replaced."""
    if not in_place and not (Path(run) / "run.json").is_file():
        raise JudgeRunError(f"{run} is not a collect run (no run.json); scoring rewrites its "
                            "outcomes.jsonl: copy the set first, or pass --in-place to score "
                            "it where it is.")


class JudgeConfig(BaseModel):
    """The judge endpoint and how to ask it (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: Backend
    max_tokens: int = Field(256, ge=16, le=8192)
    malformed_retries: int = Field(2, ge=0, le=10)
    http_retries: int = Field(4, ge=0, le=20)


def load_judge_config(path: Path) -> JudgeConfig:
    """Read and validate a judge config; one line naming what is wrong."""
    try:
        raw = yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise JudgeConfigError(f"{path}: cannot read the judge config "
                               f"({' '.join(str(exc).split())}).") from None
    if not isinstance(raw, dict) or "judge" not in raw:
        raise JudgeConfigError(f"{path}: expected a mapping with a 'judge' backend (name, "
                               "base_url, model, ...).")
    try:
        return JudgeConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise JudgeConfigError(f"{path}: {problems}") from None


@dataclass
class JudgeReport:
    """What a judge run did."""

    outcomes: int = 0
    scored: int = 0
    cached: int = 0
    asked: int = 0
    unscored: int = 0
    no_response: int = 0
    malformed_answers: int = 0


def cache_key(config: JudgeConfig, sample: Sample, response: str) -> str:
    """The content hash a score is cached under."""
    digest = hashlib.sha256(json.dumps(
        [RUBRIC_VERSION, config.judge.model, config.judge.vision, sample.question,
         sample.answer, response], ensure_ascii=False).encode())
    if config.judge.vision:
        for path in sample.image_paths():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def judge_body(config: JudgeConfig, sample: Sample, response: str) -> dict[str, Any]:
    """The chat request that asks the judge about one response."""
    show = config.judge.vision and bool(sample.images)
    prompt = judge_prompt(sample.question, response, sample.answer,
                          image_hidden=bool(sample.images) and not show)
    content: Any = prompt
    if show:
        content = [{"type": "text", "text": prompt}, *(
            {"type": "image_url", "image_url": {"url": data_url(p)}}
            for p in sample.image_paths())]
    return {"model": config.judge.model, "max_tokens": config.max_tokens, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": content}]}


def judge_run(run: Path, config: JudgeConfig, *, progress: Callable[[int, int], None]
              | None = None, transport: Transport | None = None,
              cache: Path | None = None, in_place: bool = False) -> JudgeReport:
    """Score every response of the run folder ``run`` and rewrite its outcomes.jsonl (a
    folder that is not a collect run only when ``in_place``)."""
    check_run(Path(run), in_place)
    with lock_run(Path(run)):          # collect holds it too: one writer of outcomes.jsonl
        return asyncio.run(_judge(Path(run), config, progress or (lambda d, t: None),
                                  transport, cache))


async def _judge(run: Path, config: JudgeConfig, progress: Callable[[int, int], None],
                 transport: Transport | None, cache: Path | None) -> JudgeReport:
    require("aiohttp", extra="serve")
    require("orjson", extra="serve")
    samples = {s.sample_id: s for s in read_samples(run).samples}
    rows = [row for _, row in iter_jsonl(run / "outcomes.jsonl")]
    report = JudgeReport(outcomes=len(rows))
    headers = headers_for(config.judge)          # a missing key fails before any call
    journal = Journal(cache or run / CACHE)
    keyed, todo = _plan(rows, samples, config, journal, report)
    own = transport is None
    wire = transport or AiohttpTransport()
    queue, done = list(todo.items()), 0
    progress(done, len(todo))

    async def worker() -> None:
        nonlocal done
        while queue:
            key, (sample, response) = queue.pop()
            entry = await _ask(wire, config, sample, response, headers, report)
            await journal.finish(key, entry)
            done += 1
            progress(done, len(todo))

    try:
        await asyncio.gather(*(worker() for _ in range(min(config.judge.max_concurrency,
                                                           max(1, len(todo))))))
    finally:
        if own:
            await wire.close()
        journal.close()
    _write(run, {"model": config.judge.model, "rubric": RUBRIC_VERSION,
                 "endpoint": config.judge.base_url}, keyed, journal.done, report)
    return report


def _plan(rows: list[dict[str, Any]], samples: dict[str, Sample], config: JudgeConfig,
          journal: Journal, report: JudgeReport
          ) -> tuple[list[tuple[dict[str, Any], str | None]], dict[str, tuple[Sample, str]]]:
    """Each row with its cache key (None: nothing to judge), and what to ask the judge (one
    call per distinct key without a cached score)."""
    todo: dict[str, tuple[Sample, str]] = {}
    keyed: list[tuple[dict[str, Any], str | None]] = []
    for row in rows:
        sample, response = samples.get(str(row.get("sample_id"))), row.get("response")
        if sample is None or not isinstance(response, str):
            report.no_response += 1
            keyed.append((row, None))
            continue
        key = cache_key(config, sample, response)
        keyed.append((row, key))
        if journal.done.get(key, {}).get("score") is not None:
            report.cached += 1
        else:
            todo.setdefault(key, (sample, response))
    return keyed, todo


async def _ask(wire: Transport, config: JudgeConfig, sample: Sample, response: str,
               headers: dict[str, str], report: JudgeReport) -> dict[str, Any]:
    import orjson

    body = judge_body(config, sample, response)
    policy = RetryPolicy(retries=config.http_retries)
    error = "no answer"
    for _ in range(config.malformed_retries + 1):
        payload = orjson.dumps(body)
        report.asked += 1
        result = await chat(wire, config.judge, payload, stream=False, policy=policy,
                            headers=headers)
        if not result.ok:
            error = result.error or f"HTTP {result.status}"
            break                                   # HTTP retries are already spent
        score = parse_score(result.text or "")
        if score is not None:
            return {"score": score, "model": config.judge.model, "rubric": RUBRIC_VERSION,
                    "answer": (result.text or "")[-500:]}
        report.malformed_answers += 1
        error = f"malformed judge answer (no valid SCORE line): {(result.text or '')[-120:]!r}"
        # asked again with its answer and a reminder: at temperature 0 the same question
        # would get the same answer
        body = {**body, "messages": [*body["messages"][:2],
                                     {"role": "assistant", "content": result.text or ""},
                                     {"role": "user", "content": REMINDER}]}
    return {"score": None, "error": error, "model": config.judge.model,
            "rubric": RUBRIC_VERSION}


def reference_run(run: Path, *, in_place: bool = False) -> JudgeReport:
    """Score every response of ``run`` against its sample's reference answer by rule
    (:func:`vlroute.data.answers.match_score`), no judge model; a sample without a reference
    leaves its responses unscored. A folder that is not a collect run only when
    ``in_place``."""
    check_run(Path(run), in_place)
    with lock_run(Path(run)):
        return _reference(Path(run))


def _reference(run: Path) -> JudgeReport:
    samples = {s.sample_id: s for s in read_samples(run).samples}
    rows = [row for _, row in iter_jsonl(Path(run) / "outcomes.jsonl")]
    report = JudgeReport(outcomes=len(rows))
    keyed: list[tuple[dict[str, Any], str | None]] = []
    scores: dict[str, dict[str, Any]] = {}
    for n, row in enumerate(rows):
        sample, response = samples.get(str(row.get("sample_id"))), row.get("response")
        if sample is None or not isinstance(response, str):
            report.no_response += 1
            keyed.append((row, None))
            continue
        key = str(n)
        keyed.append((row, key))
        scores[key] = ({"score": match_score(sample.answer, response), "model": REFERENCE,
                        "rubric": REFERENCE_VERSION} if sample.answer is not None else
                       {"score": None, "error": "the sample has no reference answer"})
    _write(Path(run), {"model": REFERENCE, "rubric": REFERENCE_VERSION}, keyed, scores, report)
    return report


def _write(run: Path, judge: dict[str, Any], keyed: list[tuple[dict[str, Any], str | None]],
           cache: dict[str, dict[str, Any]], report: JudgeReport) -> None:
    out = []
    for row, key in keyed:
        row = {k: v for k, v in row.items() if k not in ("judge", "judge_error")}
        entry = cache.get(key) if key is not None else None
        if entry is not None and entry.get("score") is not None:
            row.update(score=entry["score"] / 10, raw_score=entry["score"],
                       judge={"model": entry["model"], "rubric": entry["rubric"],
                              **({"key": key} if judge["model"] != REFERENCE else {})})
            report.scored += 1
        elif key is not None:
            row.update(score=None, raw_score=None,
                       judge_error=(entry or {}).get("error", "not judged"))
            report.unscored += 1
        out.append(row)
    write_jsonl(run / "outcomes.jsonl", out)
    info = read_json_object(run / "set.json", missing_ok=True)
    info.update(label="graded", raw_scale=[0, 10], judge=judge)
    write_json_atomic(run / "set.json", info)


__all__ = ["CACHE", "REFERENCE", "REFERENCE_VERSION", "JudgeConfig", "JudgeConfigError",
           "JudgeReport", "JudgeRunError", "cache_key", "check_run", "judge_body", "judge_run",
           "load_judge_config", "reference_run"]
