"""``vlroute collect``: send every sample of a set to every backend and record what each
answered, measured (tokens, time to first token, latency, cost, energy), into a run folder
that is itself a set in the shared contract.

Per backend, at most ``concurrency`` calls are in flight (default: the backend's
``max_concurrency``). Each call is journalled (:mod:`.journal`) before it is sent and when its
result is known, so a run killed at any point and started again repeats no recorded call and
loses no finished one; the calls in flight at the kill are made again, and the report counts
them. A spend cap stops new calls once the money spent plus the estimates of the calls in
flight would pass it; a later run with a higher cap goes on where this one stopped.

Cost is priced from the answer's ``usage`` at the backend's configured prices
(``price_in_per_1m``, ``price_out_per_1m``); an answer without believable usage has no
measured cost (the bench estimates it from the catalog). Against the cap, every attempt that
may have been billed (:func:`vlroute.collect.calls.billable`: retried ones, failed final
ones) is booked at its usage cost, else at the call's estimate: the question at 4 characters
a token, each image at the backend's ``image_tokens`` (a number, or a catalog rule applied to
the image's width and height; 765 when unset), and ``max_tokens`` out. Calls in flight at a
kill are booked at their estimate. The cap can be passed by at most the sum, over the calls
in flight when the last call was let through, of (booked - estimate).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlroute._optional import require
from vlroute.collect.calls import CallResult, RetryPolicy, chat, headers_for
from vlroute.collect.journal import Journal, lock_run
from vlroute.collect.outputs import write_run
from vlroute.collect.samples import Sample, SampleSet, chat_body, chat_payload
from vlroute.costs.image_tokens import BUILTIN_RULES
from vlroute.errors import VlrouteError
from vlroute.serve.config import Backend
from vlroute.serve.upstream import AiohttpTransport, Transport

#: progress(done, total): calls finished (or skipped as recorded) out of the plan
Progress = Callable[[int, int], None]
JOURNAL = "journal.jsonl"


class CollectError(VlrouteError):
    """Collect cannot run as asked (no backends, a bad option)."""


@dataclass(frozen=True)
class CollectOptions:
    """How to collect (see the module docstring)."""

    max_tokens: int = 512
    stream: bool = True
    spend_cap_usd: float | None = None
    concurrency: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retry_errors: bool = False
    limit: int | None = None
    share: float | None = None
    seed: int = 0
    only: tuple[str, ...] | None = None


@dataclass
class CollectReport:
    """What a run did; ``stopped`` says why it ended early (None: it did all it planned)."""

    planned: int = 0
    recorded_before: int = 0
    made: int = 0
    failed: int = 0
    no_vision: int = 0
    unpriced: list[str] = field(default_factory=list)
    in_flight_repeated: int = 0
    request_changed: int = 0
    stale: int = 0
    spent_usd: float = 0.0
    calls_s: float = 0.0
    stopped: str | None = None
    out: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def key_of(backend: str, sample_id: str) -> str:
    """The journal key of one (backend, sample) call."""
    return f"{backend}\t{sample_id}"


class Fingerprints:
    """The fingerprint of each (backend, sample) request: the SHA-256 of the chat body without
    its stream fields (each image by the SHA-256 of its bytes, so the images are read but not
    encoded) and of the backend's upstream ``model`` and ``base_url``. A recorded result
    whose fingerprint differs answered another request (the question, an image, the model or
    ``max_tokens`` changed): it is not reused."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._images: dict[Path, str] = {}

    def _image(self, path: Path) -> str:
        digest = self._images.get(path)
        if digest is None:
            digest = self._images[path] = (f"{path.suffix.lower()};sha256,"
                                           + hashlib.sha256(path.read_bytes()).hexdigest())
        return digest

    def __call__(self, sample: Sample, backend: Backend) -> str:
        body = chat_body(sample, backend.model, max_tokens=self.max_tokens, stream=False,
                         image_url=self._image)
        doc = {"body": body, "model": backend.model, "base_url": backend.base_url}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()
                              ).hexdigest()


def has_prices(backend: Backend) -> bool:
    """Whether the config sets the backend's prices: either price given (0 included, for a
    free backend) or non-zero. A backend without them has no measured cost (``cost_usd``
    null: the bench estimates it from the catalog), not a measured $0."""
    given = {"price_in_per_1m", "price_out_per_1m"} & backend.model_fields_set
    return bool(given) or backend.price_in_per_1m > 0 or backend.price_out_per_1m > 0


def matches(entry: dict[str, Any], fingerprint: str) -> bool:
    """Whether a recorded result answered the request ``fingerprint`` (an entry written
    before fingerprints were recorded is taken to match)."""
    recorded = entry.get("fingerprint")
    return recorded is None or recorded == fingerprint


#: tokens an image is estimated at when the backend's image_tokens is unset
IMAGE_TOKENS = 765


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file from its header; None when unreadable."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return _image_size(Path(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=65536)
def _image_size(path: Path, _mtime_ns: int, _size: int) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return int(image.width), int(image.height)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def image_tokens(sample: Sample, backend: Backend) -> int:
    """The input tokens of ``sample``'s images at ``backend``: its ``image_tokens`` number,
    or its catalog rule applied to each image's width and height (an unreadable image, or
    no ``image_tokens``: 765)."""
    rule = backend.image_tokens
    if isinstance(rule, int):
        return rule * len(sample.images)
    if rule is None or not sample.images:
        return IMAGE_TOKENS * len(sample.images)
    sizes = [image_size(p) for p in sample.image_paths()]
    known = [s for s in sizes if s is not None]
    tokens = IMAGE_TOKENS * (len(sizes) - len(known))
    if known:
        w = np.array([s[0] for s in known], dtype=float)
        h = np.array([s[1] for s in known], dtype=float)
        tokens += math.ceil(float(BUILTIN_RULES[rule](w, h).sum()))
    return tokens


def estimate_usd(sample: Sample, backend: Backend, max_tokens: int) -> float:
    """The cost a call is held at against the spend cap (see the module docstring)."""
    tokens_in = math.ceil(len(sample.question) / 4) + image_tokens(sample, backend)
    return (tokens_in * backend.price_in_per_1m + max_tokens * backend.price_out_per_1m) / 1e6


def plan(samples: SampleSet, options: CollectOptions) -> list[Sample]:
    """The samples to send: the first ``limit``, or a seeded ``share``."""
    chosen = list(samples.samples)
    if options.share is not None:
        if not 0 < options.share <= 1:
            raise CollectError(f"share is {options.share}; expected a fraction in (0, 1].")
        rng = random.Random(options.seed)
        chosen = sorted(rng.sample(chosen, max(1, round(len(chosen) * options.share))),
                        key=lambda s: s.sample_id)
    return chosen[:options.limit] if options.limit is not None else chosen


class _Budget:
    def __init__(self, cap: float | None, spent: float) -> None:
        self.cap, self.spent, self.held = cap, spent, 0.0

    def hold(self, usd: float) -> bool:
        if self.cap is not None and self.spent + self.held + usd > self.cap:
            return False
        self.held += usd
        return True

    def settle(self, held: float, spent: float) -> None:
        self.held -= held
        self.spent += spent


@dataclass
class _Run:
    journal: Journal
    transport: Transport
    options: CollectOptions
    budget: _Budget
    report: CollectReport
    total: int
    progress: Progress
    fingerprints: dict[str, str]
    done: int = 0
    #: results written but not yet counted (counted once their fsync is done), and the one
    #: task that waits for their fsyncs
    unsynced: list[bool] = field(default_factory=list)
    counter: asyncio.Task[None] | None = None
    #: set once every worker has returned (the counter then stops grouping fsyncs)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    #: the loop time the last fsync started
    synced_at: float = float("-inf")


def collect(samples: SampleSet, backends: Sequence[Backend], out: Path, *,
            options: CollectOptions | None = None, progress: Progress | None = None,
            transport: Transport | None = None) -> CollectReport:
    """Collect every planned (sample, backend) pair into the run folder ``out``."""
    return asyncio.run(collect_async(samples, backends, out, options=options,
                                     progress=progress, transport=transport))


async def collect_async(samples: SampleSet, backends: Sequence[Backend], out: Path, *,
                        options: CollectOptions | None = None,
                        progress: Progress | None = None,
                        transport: Transport | None = None) -> CollectReport:
    """:func:`collect` inside a running event loop."""
    require("aiohttp", extra="serve")
    require("orjson", extra="serve")
    options = options or CollectOptions()
    calling = _check_backends(backends, options)
    chosen = plan(samples, options)
    # one lock for the folder, held until outcomes.jsonl and run.json are written: a judge
    # run (which takes it too) never rewrites outcomes.jsonl at the same time
    with lock_run(Path(out)):
        check_out(Path(out))
        return await _collect(samples, backends, Path(out), options, calling, chosen,
                              progress, transport)


async def _collect(samples: SampleSet, backends: Sequence[Backend], out: Path,
                   options: CollectOptions, calling: list[Backend], chosen: list[Sample],
                   progress: Progress | None, transport: Transport | None) -> CollectReport:
    journal = Journal(Path(out) / JOURNAL)
    report = CollectReport(out=Path(out))
    report.unpriced = [b.name for b in calling if not has_prices(b)]
    fingerprint = Fingerprints(options.max_tokens)
    fps = {key_of(b.name, s.sample_id): fingerprint(s, b) for b in calling for s in chosen
           if not (s.images and not b.vision)}
    todo = _todo(journal, calling, chosen, options, report, fps)
    # every call booked so far, the replaced ones too, and those lost in flight at a stop
    spent = sum(float(e.get("spend_usd") or 0.0) for e in [*journal.done.values(),
                                                           *journal.replaced])
    spent += sum(float(e.get("estimate_usd") or 0.0) for e in journal.lost)
    own = transport is None
    run = _Run(journal, transport or AiohttpTransport(), options, _Budget(
        options.spend_cap_usd, spent), report, report.planned, progress or (lambda d, t: None),
        fps, done=report.recorded_before)
    run.progress(run.done, run.total)
    start = time.perf_counter()
    try:
        await asyncio.gather(*(_backend_workers(run, b, todo[b.name]) for b in calling))
        run.finished.set()
        while run.counter is not None and not run.counter.done():
            await run.counter
    finally:
        report.calls_s = time.perf_counter() - start
        if own:
            await run.transport.close()
        journal.close()
        report.spent_usd = run.budget.spent
        # every sample with a result so far stays, whatever this run planned
        keep = {e.get("sample_id") for e in journal.done.values()} | {
            c.sample_id for c in chosen}
        kept = [s for s in samples.samples if s.sample_id in keep]
        # a result recorded for another request (not called again here: another backend,
        # a stop) is left out of outcomes.jsonl; it stays in the journal
        by_name = {b.name: b for b in backends}
        by_id = {s.sample_id: s for s in kept}
        stale = set()
        for key, entry in journal.done.items():
            backend = by_name.get(str(entry.get("backend")))
            sample = by_id.get(str(entry.get("sample_id")))
            if backend is None or sample is None or entry.get("fingerprint") is None:
                continue
            current = fps.get(key) or fingerprint(sample, backend)
            if not matches(entry, current):
                stale.add(key)
        report.stale = len(stale)
        report.summary = write_run(Path(out), samples, kept, backends, journal.done,
                                   report_fields(report), exclude=stale)
    return report


def check_out(out: Path) -> None:
    """Refuse an output folder that holds a set but is not a collect run (outcomes.jsonl
    without journal.jsonl): writing the run there would replace the set's own outcomes."""
    if (out / "outcomes.jsonl").is_file() and not (out / JOURNAL).is_file():
        raise CollectError(f"{out} holds a set (outcomes.jsonl) but is not a collect run (no "
                           f"{JOURNAL}); collecting there would replace its outcomes: give "
                           "--out a new or run folder.")


def _check_backends(backends: Sequence[Backend], options: CollectOptions) -> list[Backend]:
    """The backends to call; one model per backend, and their keys are set."""
    if not backends:
        raise CollectError("no backends to collect from; the config needs at least one.")
    ids = [b.router_model or b.name for b in backends]
    twice = [b.name for b, m in zip(backends, ids, strict=True) if ids.count(m) > 1]
    if twice:
        raise CollectError(f"backends {', '.join(twice)} stand for one model (router_model); "
                           "a run needs one model per backend: give them distinct "
                           "router_model values.")
    calling = [b for b in backends if options.only is None or b.name in options.only]
    for backend in calling:
        headers_for(backend)                   # a missing key fails here, before any call
    return calling


def _todo(journal: Journal, calling: Sequence[Backend], chosen: Sequence[Sample],
          options: CollectOptions, report: CollectReport, fps: dict[str, str]
          ) -> dict[str, list[Sample]]:
    """Per backend, the samples still to call (counting what is recorded, recorded for
    another request, or skipped)."""
    todo: dict[str, list[Sample]] = {}
    for backend in calling:
        todo[backend.name] = []
        for sample in chosen:
            if sample.images and not backend.vision:
                report.no_vision += 1            # as the gateway: never sent images
                continue
            key = key_of(backend.name, sample.sample_id)
            entry = journal.done.get(key)
            changed = entry is not None and not matches(entry, fps[key])
            if changed:
                report.request_changed += 1      # recorded for another request: call again
                todo[backend.name].append(sample)
            elif entry is not None and not (options.retry_errors and entry.get("error")):
                report.recorded_before += 1
            else:
                todo[backend.name].append(sample)
                report.in_flight_repeated += key in journal.in_flight
    report.planned = sum(len(v) for v in todo.values()) + report.recorded_before
    return todo


def report_fields(report: CollectReport) -> dict[str, Any]:
    """The report as JSON fields (for run.json)."""
    return {"planned": report.planned, "recorded_before": report.recorded_before,
            "made": report.made, "failed": report.failed,
            "in_flight_repeated": report.in_flight_repeated,
            "request_changed": report.request_changed, "stale_left_out": report.stale,
            "no_vision_skipped": report.no_vision, "unpriced_backends": report.unpriced,
            "spent_usd": round(report.spent_usd, 9), "calls_s": round(report.calls_s, 6),
            "stopped": report.stopped}


async def _backend_workers(run: _Run, backend: Backend, samples: list[Sample]) -> None:
    queue = list(reversed(samples))
    width = run.options.concurrency or backend.max_concurrency
    headers = headers_for(backend)
    await asyncio.gather(*(_worker(run, backend, queue, headers)
                           for _ in range(min(width, len(samples)))))


async def _worker(run: _Run, backend: Backend, queue: list[Sample],
                  headers: dict[str, str]) -> None:

    options = run.options
    while queue and run.report.stopped is None:
        sample = queue.pop()
        held = estimate_usd(sample, backend, options.max_tokens)
        if not run.budget.hold(held):
            run.report.stopped = (f"spend cap ${options.spend_cap_usd:g} reached "
                                  f"(${run.budget.spent:.6f} spent)")
            return
        key = key_of(backend.name, sample.sample_id)
        run.journal.start(key, estimate_usd=held)
        payload = chat_payload(sample, backend.model, max_tokens=options.max_tokens,
                               stream=options.stream)
        result = await chat(run.transport, backend, payload, stream=options.stream,
                            policy=options.retry, headers=headers)
        entry = {**outcome_entry(sample, backend, result, held),
                 "fingerprint": run.fingerprints[key]}
        run.budget.settle(held, entry["spend_usd"])
        run.journal.hold(key, entry)
        # the next call goes out while this result is written and fsynced with the others
        # of its group; it is counted once it is on disk, by one task for them all
        run.unsynced.append(result.ok)
        if run.counter is None or run.counter.done():
            run.counter = asyncio.ensure_future(_count(run))


#: while calls go on, an fsync starts at least this long after the one before, so that one
#: fsync serves the results of that span (calls never wait for it)
GROUP_S = 0.02


async def _count(run: _Run) -> None:
    """Count the written results as their fsyncs complete (every result written before a
    commit is on disk when it returns), then report progress once per batch; while the
    workers run, an fsync starts at least :data:`GROUP_S` after the one before (at once
    when they are done)."""
    loop = asyncio.get_running_loop()
    while run.unsynced:
        pause = run.synced_at + GROUP_S - loop.time()
        if pause > 0 and not run.finished.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await run.finished.wait()
        batch, run.unsynced = run.unsynced, []
        run.synced_at = loop.time()
        await run.journal.commit()
        run.report.made += len(batch)
        run.report.failed += batch.count(False)
        run.done += len(batch)
        run.progress(run.done, run.total)


def outcome_entry(sample: Sample, backend: Backend, result: CallResult, estimate: float
                  ) -> dict[str, Any]:
    """The journal's record of one call: measured values, or None where not measured;
    ``spend_usd`` books every attempt that may have been billed at its usage cost, else at
    ``estimate``."""
    def priced(tokens: tuple[int, int]) -> float:
        return (tokens[0] * backend.price_in_per_1m + tokens[1] * backend.price_out_per_1m
                ) / 1e6

    cost = (priced(result.tokens) if result.tokens is not None and has_prices(backend)
            else None)
    spend = sum(priced(t) if t is not None else estimate for t in result.charged)
    energy = None
    if backend.power_w is not None and result.latency_s is not None and result.ok:
        energy = backend.power_w * result.latency_s
    return {
        "sample_id": sample.sample_id, "backend": backend.name,
        "model": backend.router_model or backend.name, "status": result.status,
        "error": result.error, "response": result.text if result.ok else None,
        "tokens_in": result.tokens[0] if result.tokens else None,
        "tokens_out": result.tokens[1] if result.tokens else None,
        "ttft_s": _round(result.ttft_s), "latency_s": _round(result.latency_s),
        "cost_usd": cost, "energy_j": _round(energy),
        "spend_usd": spend,
        "attempts": result.attempts, "retried": result.retried, "ts": time.time()}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


__all__ = ["IMAGE_TOKENS", "JOURNAL", "CollectError", "CollectOptions", "CollectReport",
           "Fingerprints", "check_out", "collect", "collect_async", "estimate_usd",
           "has_prices", "image_size", "image_tokens", "key_of", "matches", "outcome_entry", "plan"]
