"""Measured latency, time to first token, cost and energy per backend, from collected calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlroute.serve.config import Backend

PERCENTILES = (50, 90, 99)


def percentiles(values: Sequence[float | None]) -> dict[str, float | None]:
    """p50, p90 and p99 of the values that are not None (None when there are none)."""
    data = np.array([v for v in values if v is not None], dtype=float)
    if not len(data):
        return {f"p{p}": None for p in PERCENTILES}
    return {f"p{p}": round(float(np.percentile(data, p)), 6) for p in PERCENTILES}


def _mean(values: Sequence[float | None]) -> float | None:
    data = [v for v in values if v is not None]
    return round(float(np.mean(data)), 9) if data else None


def backend_summary(entries: Sequence[dict[str, Any]], backend: Backend) -> dict[str, Any]:
    """Calls, failures, latency and time-to-first-token percentiles (s), mean tokens, cost
    and energy per answered request, beside the config's estimates (``latency_s``,
    ``energy_j``)."""
    ok = [e for e in entries if e.get("response") is not None]
    energy = _mean([e.get("energy_j") for e in ok])
    return {
        "model": backend.router_model or backend.name, "tier": backend.tier,
        "calls": len(entries), "answered": len(ok), "failed": len(entries) - len(ok),
        "latency_s": percentiles([e.get("latency_s") for e in ok]),
        "ttft_s": percentiles([e.get("ttft_s") for e in ok]),
        "tokens_in_mean": _mean([e.get("tokens_in") for e in ok]),
        "tokens_out_mean": _mean([e.get("tokens_out") for e in ok]),
        "cost_usd_mean": _mean([e.get("cost_usd") for e in ok]),
        "energy_j_mean": energy,
        "energy_from": (f"power_w {backend.power_w:g} W x measured latency"
                        if backend.power_w is not None else None),
        "estimated": {"latency_s": backend.latency_s, "energy_j": backend.energy_j},
    }


__all__ = ["PERCENTILES", "backend_summary", "percentiles"]
