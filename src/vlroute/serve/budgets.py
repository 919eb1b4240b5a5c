"""Spend budgets per API key (USD per UTC day and per UTC month).

Before a call the gateway reserves the decision's estimated cost; after it, the reservation is
settled with the actual cost (from the usage the backend returned). A request whose
reservation would take spent + reserved over a budget gets a 429 naming that budget, so
concurrent requests cannot overshoot it together. Spend already recorded in telemetry counts
after a restart.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from vlroute.serve.routing import RequestError

_ADJ = {"day": "daily", "month": "monthly"}


def periods(now: dt.datetime) -> dict[str, str]:
    """The current budget periods: {"day": "2026-11-23", "month": "2026-11"}."""
    return {"day": now.strftime("%Y-%m-%d"), "month": now.strftime("%Y-%m")}


@dataclass
class Budgets:
    """Limits per key id, and spent + reserved per (key, period)."""

    limits: dict[str, dict[str, float]]
    spent: dict[tuple[str, str], float] = field(default_factory=dict)
    reserved: dict[tuple[str, str], float] = field(default_factory=dict)

    def reserve(self, key: str | None, amount: float, now: dt.datetime) -> dict[str, str]:
        """Hold ``amount`` USD against every budget of ``key``; the periods held (pass them
        to :meth:`settle`). Raises a 429 RequestError naming the budget that would overflow."""
        if key is None or key not in self.limits:
            return {}
        held = periods(now)
        for kind, period in held.items():
            limit = self.limits[key].get(kind)
            if limit is None:
                continue
            used = self.spent.get((key, period), 0.0) + self.reserved.get((key, period), 0.0)
            if used + amount > limit:
                raise RequestError(
                    f"API key {key!r} is over its {_ADJ[kind]} budget of ${limit:g} for {period} "
                    f"(spent and reserved ${used:.6f}; this request is estimated at "
                    f"${amount:.6f}).", status=429, param="budget")
        for period in held.values():
            self.reserved[(key, period)] = self.reserved.get((key, period), 0.0) + amount
        return held

    def settle(self, key: str | None, held: dict[str, str], reserved: float,
               actual: float) -> None:
        """Release the reservation and book the actual cost."""
        if key is None or not held:
            return
        for period in held.values():
            self.reserved[(key, period)] = max(
                0.0, self.reserved.get((key, period), 0.0) - reserved)
            self.spent[(key, period)] = self.spent.get((key, period), 0.0) + actual
