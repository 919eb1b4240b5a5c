"""Spend budgets per API key (USD per UTC day and per UTC month), shared by every worker.

Before a call the gateway reserves the decision's estimated cost: a hold in the database,
made under a lock, so concurrent requests (in any worker) cannot overshoot together. The
request's telemetry row books the actual cost (from the usage the backend returned; the
estimate for a stream) and drops the hold in one transaction. A request whose reservation
would take spent + held over a budget gets a 429 naming that budget. Spend survives
restarts; a hold left by a crashed worker expires after :data:`HOLD_TTL_S`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from vlroute.serve.config import AuthKey
from vlroute.serve.requests import RequestError
from vlroute.serve.stores import periods
from vlroute.serve.telemetry import Recorder

#: a hold is ignored after this long: longer than any request (streams included) should
#: last, short enough that a crashed worker's holds do not block a key for a day
HOLD_TTL_S = 3600.0
_ADJ = {"day": "daily", "month": "monthly"}


class Budgets:
    """The limits of each key id, enforced through the recorder's store."""

    def __init__(self, keys: list[AuthKey], recorder: Recorder) -> None:
        self.limits = {k.id: {kind: limit for kind, limit in (
            ("day", k.budget_usd_day), ("month", k.budget_usd_month)) if limit is not None}
            for k in keys}
        self.limits = {k: v for k, v in self.limits.items() if v}
        self.recorder = recorder

    async def reserve(self, key: str | None, hold_id: str, amount: float,
                      now: dt.datetime) -> bool:
        """Hold ``amount`` USD against every budget of ``key`` under ``hold_id`` (the
        request id: its telemetry row releases the hold). False when the key has no budget
        (nothing held). Raises a 429 RequestError naming the budget that would overflow."""
        if key is None or key not in self.limits:
            return False
        current = periods(now)
        limits = {current[kind]: limit for kind, limit in self.limits[key].items()}
        ts = now.timestamp()
        over: Any = await self.recorder.call(self.recorder.store.reserve, key, hold_id,
                                             amount, limits, ts, ts + HOLD_TTL_S)
        if over is not None:
            period, limit, used = over
            kind = next(k for k, p in current.items() if p == period)
            raise RequestError(
                f"API key {key!r} is over its {_ADJ[kind]} budget of ${limit:g} for {period} "
                f"(spent and reserved ${used:.6f}; this request is estimated at "
                f"${amount:.6f}).", status=429, param="budget")
        return True

    async def status(self, key: str, now: dt.datetime) -> list[dict[str, Any]]:
        """Each budget of ``key``: its period, limit, spent, held by requests in flight, and
        what is left."""
        limits = self.limits.get(key, {})
        current = periods(now)
        usage: dict[str, tuple[float, float]] = await self.recorder.call(
            self.recorder.store.usage, key, [current[k] for k in limits], now.timestamp())
        out = []
        for kind, limit in limits.items():
            spent, held = usage[current[kind]]
            out.append({"budget": _ADJ[kind], "period": current[kind], "limit_usd": limit,
                        "spent_usd": spent, "held_usd": held,
                        "remaining_usd": max(0.0, limit - spent - held)})
        return out

    async def release(self, hold_id: str) -> None:
        """Drop a hold whose request ends without a telemetry row."""
        await self.recorder.call(self.recorder.store.release, hold_id)
