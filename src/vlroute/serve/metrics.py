"""The gateway's Prometheus metrics, kept in constant memory (counters and fixed-bucket
histograms) and rendered in the text exposition format for ``GET /metrics``."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable

#: request latency buckets (seconds): a cached answer to a long generation
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: routing-time buckets (seconds): a training-free decision to image encoders on a CPU
ROUTE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 1)


class Histogram:
    """Counts per bucket (the last is +Inf) and the sum."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, cumulative = [], 0
        for edge, count in zip((*self.buckets, "+Inf"), self.counts, strict=True):
            cumulative += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{edge}"}} {cumulative}')
        tail = f"{{{labels}}}" if labels else ""
        return [*out, f"{name}_sum{tail} {self.sum:.6f}", f"{name}_count{tail} {cumulative}"]


class Metrics:
    """What ``/metrics`` reports; one per worker process."""

    def __init__(self, backends: Iterable[str]) -> None:
        self.backends = list(backends)
        self.counters: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()
        self.request_seconds = Histogram(REQUEST_BUCKETS)
        self.route_seconds = Histogram(ROUTE_BUCKETS)
        self.ttft_seconds = {b: Histogram(REQUEST_BUCKETS) for b in self.backends}

    def render(self, in_flight: dict[str, int], up: set[str]) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_: str, body: list[str]) -> None:
            lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *body])

        for name, help_ in (
                ("requests", "Requests answered by a backend or failed upstream."),
                ("fallbacks", "Moves from one backend to the next (error, 5xx, busy)."),
                ("client_disconnects", "Requests whose client left before the answer.")):
            family(f"vlroute_{name}_total", "counter", help_,
                   [f"vlroute_{name}_total {self.counters[name]}"])
        family("vlroute_decisions_total", "counter", "Requests answered, per backend.",
               [f'vlroute_decisions_total{{model="{b}"}} {self.decisions[b]}'
                for b in self.backends])
        family("vlroute_request_seconds", "histogram", "Time from request to answer (to the "
               "end of a stream).", self.request_seconds.lines("vlroute_request_seconds"))
        family("vlroute_route_seconds", "histogram", "Time spent choosing the backend "
               "(features and router).", self.route_seconds.lines("vlroute_route_seconds"))
        family("vlroute_ttft_seconds", "histogram", "Time to the backend's first byte, per "
               "backend.", [line for b in self.backends for line in
                            self.ttft_seconds[b].lines("vlroute_ttft_seconds", f'model="{b}"')])
        family("vlroute_backend_in_flight", "gauge", "Requests a backend is working on.",
               [f'vlroute_backend_in_flight{{model="{b}"}} {in_flight.get(b, 0)}'
                for b in self.backends])
        family("vlroute_backend_up", "gauge", "1 unless the circuit breaker has taken the "
               "backend out.", [f'vlroute_backend_up{{model="{b}"}} {int(b in up)}'
                                for b in self.backends])
        return "\n".join(lines) + "\n"
