"""A circuit breaker per backend: closed, open after consecutive failures, half-open after a
cool-down, when exactly one request probes the backend.

Reading the state (``/health``, ``/metrics``, routing's candidate list) never changes it: the
half-open probe is taken only by :meth:`Breaker.admit`, which the upstream call runs just
before it sends a request, and given back by :meth:`Breaker.abandon` when that request ends
without an answer either way (the client left).
"""

from __future__ import annotations

import time
from typing import Literal

#: a backend with this many failures in a row is taken out ...
FAILURES = 3
#: ... for this many seconds; then one request probes it
COOLDOWN_S = 30.0

State = Literal["closed", "open", "half_open"]


class Breaker:
    """The breaker of one backend (one event loop: no locks needed)."""

    def __init__(self, failures: int = FAILURES, cooldown_s: float = COOLDOWN_S) -> None:
        self.threshold, self.cooldown_s = failures, cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    def state(self, now: float | None = None) -> State:
        """"closed", "open" or "half_open" (cool-down over): no side effect."""
        if self.opened_at is None:
            return "closed"
        now = time.monotonic() if now is None else now
        return "open" if now - self.opened_at < self.cooldown_s else "half_open"

    def routable(self, now: float | None = None) -> bool:
        """Whether a request may be routed here: closed, or half-open with its probe free."""
        state = self.state(now)
        return state == "closed" or (state == "half_open" and not self.probing)

    def admit(self, now: float | None = None) -> str | None:
        """Called just before sending: "closed" or "probe" (half-open: this request takes
        the probe) when the request may go; None while open or another request probes."""
        state = self.state(now)
        if state == "closed":
            return "closed"
        if state == "half_open" and not self.probing:
            self.probing = True
            return "probe"
        return None

    def success(self) -> None:
        """The backend answered: closed again."""
        self.failures, self.opened_at, self.probing = 0, None, False

    def failure(self, now: float | None = None) -> None:
        """The backend failed: open after ``threshold`` failures in a row (a failed probe
        opens it again at once)."""
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.opened_at = time.monotonic() if now is None else now
        self.probing = False

    def abandon(self) -> None:
        """A request that took the probe ended without an outcome: free the probe."""
        self.probing = False
