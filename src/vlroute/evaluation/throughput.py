"""One throughput harness for every router: the routing step timed the same way for all.

Each measurement routes ``batch`` requests at a time, after ``warmup`` untimed runs, ``runs``
times; it reports the per-request time (p50 / p99 over runs), requests per second, and, as
VL-RouterBench reports throughput, the routed prompt tokens per second (thousands: the
prompt tokens of the routed requests, each request's mean over models, per second of routing).
With encoders, the features of the batch are computed inside the timed region (no cache).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlroute._typing import FloatArray
from vlroute.data.matrices import RoutingMatrices
from vlroute.routers.base import BaseRouter
from vlroute.scenarios import Scenario


def _time(step: Callable[[], object], warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        step()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        out.append(time.perf_counter() - start)
    return out


@dataclass(frozen=True)
class TimingPlan:
    """Batch sizes, untimed warm-up runs and timed runs (the same for every router)."""

    batches: Sequence[int] = (1, 16, 64)
    warmup: int = 3
    runs: int = 20
    seed: int = 0


def measure(router: BaseRouter, data: RoutingMatrices, scenario: Scenario, *,
            X: FloatArray | None = None,
            featurize: Callable[[np.ndarray], FloatArray] | None = None,
            plan: TimingPlan = TimingPlan()) -> list[dict[str, Any]]:
    """Timing rows for ``router`` on requests drawn from ``data``.

    ``X`` holds precomputed features; ``featurize(rows)`` computes them from scratch for the
    "with encoders" rows (routers that need no features have none).
    """
    rng = np.random.default_rng(plan.seed)
    rows_out = []
    modes = [False] + ([True] if featurize is not None and router.needs_features else [])
    warmup, runs = plan.warmup, plan.runs
    for with_encoders in modes:
        for batch in plan.batches:
            rows = np.sort(rng.choice(data.n_samples, size=min(batch, data.n_samples),
                                      replace=False))
            part = data.subset(rows)

            def step(rows: np.ndarray = rows, part: RoutingMatrices = part,
                     with_encoders: bool = with_encoders) -> object:
                feats = None
                if router.needs_features:
                    feats = featurize(rows) if (with_encoders and featurize) else \
                        (X[rows] if X is not None else None)
                return router.route(part, scenario, feats)

            seconds = np.array(_time(step, warmup, runs)) / len(rows)
            with np.errstate(all="ignore"):
                tokens = float(np.nansum(np.nanmean(part.tokens_in, axis=1)))
            rows_out.append({
                "with_encoders": with_encoders, "batch": len(rows),
                "ms_p50": float(np.percentile(seconds, 50) * 1e3),
                "ms_p99": float(np.percentile(seconds, 99) * 1e3),
                "requests_per_s": float(1.0 / np.median(seconds)),
                "prompt_ktokens_per_s": tokens / (float(np.median(seconds)) * len(rows)) / 1e3})
    return rows_out
