"""Joining Ray (the ``[ray]`` extra): a cluster at an address, or a local instance."""

from __future__ import annotations

import logging

from vlroute._optional import require
from vlroute.errors import VlrouteError


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address``, or start a local instance (without dashboard);
    True when this call started it (the caller shuts it down). An unreachable address is a
    :class:`vlroute.errors.VlrouteError` naming it."""
    ray = require("ray", extra="ray")
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise VlrouteError(f"cannot connect to {where}: {exc}. Start one with `ray start "
                           "--head` and pass its address (host:port), or leave the address "
                           "out to start a local instance.") from exc
    return True


__all__ = ["connect"]
