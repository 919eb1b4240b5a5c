"""The gateway's Prometheus metrics, kept in constant memory (counters and fixed-bucket
histograms) and rendered in the text exposition format for ``GET /metrics``; with
``--workers N``, added up over the workers (:class:`SharedMetrics`)."""

from __future__ import annotations

import bisect
import copy
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: request latency buckets (seconds): a cached answer to a long generation
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: routing-time buckets (seconds): a training-free decision to image encoders on a CPU
ROUTE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 1)
#: how often a worker of ``--workers N`` shares its numbers with the others
SHARE_EVERY_S = 1.0
#: the directory ``vlroute serve --workers N`` gives its workers for sharing metrics
METRICS_DIR_ENV = "VLROUTE_METRICS_DIR"
#: counts kept per backend
PER_BACKEND = ("cost_usd", "prompt_tokens", "completion_tokens", "left_out")


class Histogram:
    """Counts per bucket (the last is +Inf) and the sum."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def state(self) -> list[Any]:
        return [list(self.counts), self.sum]


def _histogram(name: str, buckets: tuple[float, ...], state: list[Any],
               labels: str = "") -> list[str]:
    counts, total = state
    sep = "," if labels else ""
    out, cumulative = [], 0
    for edge, count in zip((*buckets, "+Inf"), counts, strict=True):
        cumulative += count
        out.append(f'{name}_bucket{{{labels}{sep}le="{edge}"}} {cumulative}')
    tail = f"{{{labels}}}" if labels else ""
    return [*out, f"{name}_sum{tail} {total:.6f}", f"{name}_count{tail} {cumulative}"]


class Metrics:
    """What ``/metrics`` reports, counted in one worker process; :meth:`snapshot` and
    :func:`merge` add up several workers."""

    def __init__(self, backends: Iterable[str]) -> None:
        self.backends = list(backends)
        self.counters: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()
        self.request_seconds = Histogram(REQUEST_BUCKETS)
        self.route_seconds = Histogram(ROUTE_BUCKETS)
        self.ttft_seconds = {b: Histogram(REQUEST_BUCKETS) for b in self.backends}
        #: per backend: USD booked, prompt and completion tokens, requests it could not take
        self.per_backend: dict[str, defaultdict[str, float]] = {
            name: defaultdict(float) for name in PER_BACKEND}

    def book(self, backend: str, cost_usd: float | None, tokens_in: int | None,
             tokens_out: int | None) -> None:
        """Count what a request's telemetry row books for ``backend``."""
        self.per_backend["cost_usd"][backend] += cost_usd or 0.0
        self.per_backend["prompt_tokens"][backend] += tokens_in or 0
        self.per_backend["completion_tokens"][backend] += tokens_out or 0

    def snapshot(self, in_flight: dict[str, int], up: set[str]) -> dict[str, Any]:
        """This worker's numbers as plain JSON-able data."""
        return {"pid": os.getpid(), "counters": dict(self.counters),
                "decisions": dict(self.decisions),
                "request_seconds": self.request_seconds.state(),
                "route_seconds": self.route_seconds.state(),
                "ttft_seconds": {b: h.state() for b, h in self.ttft_seconds.items()},
                "per_backend": {k: dict(v) for k, v in self.per_backend.items()},
                "in_flight": in_flight, "up": sorted(up)}

    def render(self, in_flight: dict[str, int], up: set[str]) -> str:
        return render(self.backends, self.snapshot(in_flight, up))


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Several workers' snapshots as one: counters and histograms add up, in-flight counts
    add up, and a backend is up only where every worker has it up."""
    out = copy.deepcopy(snapshots[0])
    for snap in snapshots[1:]:
        for field in ("counters", "decisions", "in_flight"):
            for name, value in snap[field].items():
                out[field][name] = out[field].get(name, 0) + value
        for field in ("request_seconds", "route_seconds"):
            _add(out[field], snap[field])
        for name, values in snap.get("per_backend", {}).items():
            into = out.setdefault("per_backend", {}).setdefault(name, {})
            for backend, value in values.items():
                into[backend] = into.get(backend, 0) + value
        for backend, state in snap["ttft_seconds"].items():
            if backend in out["ttft_seconds"]:
                _add(out["ttft_seconds"][backend], state)
        out["up"] = sorted(set(out["up"]) & set(snap["up"]))
    return out


def _add(into: list[Any], state: list[Any]) -> None:
    into[0] = [a + b for a, b in zip(into[0], state[0], strict=True)]
    into[1] += state[1]


def render(backends: list[str], snap: dict[str, Any]) -> str:
    """A snapshot in Prometheus' text exposition format."""
    lines: list[str] = []
    counters, decisions = snap["counters"], snap["decisions"]
    in_flight, up = snap["in_flight"], set(snap["up"])

    def family(name: str, kind: str, help_: str, body: list[str]) -> None:
        lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *body])

    for name, help_ in (
            ("requests", "Requests answered by a backend or failed upstream."),
            ("fallbacks", "Moves from one backend to the next (error, 5xx, busy)."),
            ("client_disconnects", "Requests whose client left before the answer.")):
        family(f"vlroute_{name}_total", "counter", help_,
               [f"vlroute_{name}_total {counters.get(name, 0)}"])
    def per_model(name: str, kind: str, help_: str, value: Callable[[str], Any]) -> None:
        family(name, kind, help_, [f'{name}{{model="{b}"}} {value(b)}' for b in backends])

    per = {name: snap.get("per_backend", {}).get(name, {}) for name in PER_BACKEND}
    per_model("vlroute_decisions_total", "counter", "Requests answered, per backend.",
              lambda b: decisions.get(b, 0))
    family("vlroute_request_seconds", "histogram", "Time from request to answer (to the end "
           "of a stream).", _histogram("vlroute_request_seconds", REQUEST_BUCKETS,
                                       snap["request_seconds"]))
    family("vlroute_route_seconds", "histogram", "Time spent choosing the backend (features "
           "and router).", _histogram("vlroute_route_seconds", ROUTE_BUCKETS,
                                      snap["route_seconds"]))
    family("vlroute_ttft_seconds", "histogram", "Time to the backend's first byte, per "
           "backend.", [line for b in backends for line in _histogram(
               "vlroute_ttft_seconds", REQUEST_BUCKETS, snap["ttft_seconds"][b],
               f'model="{b}"')])
    per_model("vlroute_cost_usd_total", "counter", "USD booked per backend: from the "
              "answer's usage and the configured prices, else estimated.",
              lambda b: f'{per["cost_usd"].get(b, 0.0):.9g}')
    family("vlroute_tokens_total", "counter", "Tokens per backend, from the answers' usage.",
           [f'vlroute_tokens_total{{model="{b}",kind="{kind}"}} '
            f'{int(per[kind + "_tokens"].get(b, 0))}' for b in backends
            for kind in ("prompt", "completion")])
    per_model("vlroute_left_out_total", "counter", "Routed requests a backend could not take "
              "(text-only and the request has images, or over its context window).",
              lambda b: int(per["left_out"].get(b, 0)))
    per_model("vlroute_backend_in_flight", "gauge", "Requests a backend is working on.",
              lambda b: in_flight.get(b, 0))
    per_model("vlroute_backend_up", "gauge", "1 unless a circuit breaker has taken the "
              "backend out.", lambda b: int(b in up))
    return "\n".join(lines) + "\n"


class SharedMetrics:
    """The workers of one ``vlroute serve --workers N`` share a directory: each writes its
    snapshot there every :data:`SHARE_EVERY_S` (and when it is scraped), and a scrape of any
    worker adds up all of them. A worker that has exited keeps its counts (counters never go
    back) but not its in-flight gauge."""

    def __init__(self, directory: Path, metrics: Metrics) -> None:
        self.directory, self.metrics = directory, metrics
        self.path = directory / f"worker-{os.getpid()}.json"

    def write(self, in_flight: dict[str, int], up: set[str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.metrics.snapshot(in_flight, up)))
        os.replace(tmp, self.path)                    # readers never see half a file

    def render(self, in_flight: dict[str, int], up: set[str]) -> str:
        self.write(in_flight, up)
        snapshots = []
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                snap = json.loads(path.read_text())
            except (OSError, ValueError):
                continue                              # a file being replaced: next time
            if snap["pid"] != os.getpid() and not process_alive(snap["pid"]):
                snap["in_flight"], snap["up"] = {}, list(self.metrics.backends)
            snapshots.append(snap)
        return render(self.metrics.backends, merge(snapshots))


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (its owner may be another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
