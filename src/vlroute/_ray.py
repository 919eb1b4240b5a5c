"""Joining Ray (the ``[ray]`` extra): a cluster at an address, or a local instance."""

from __future__ import annotations

import logging
import socket

from vlroute._optional import require
from vlroute.errors import VlrouteError


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address`` ("auto": the one ``RAY_ADDRESS`` or ``ray start``
    on this machine names), or start a new local instance (None or "local"; without
    dashboard, ``num_cpus`` caps it), even where a cluster runs; True when this call started
    Ray (the caller shuts it down). A session this process already holds is reused as it
    is. An unreachable address is a :class:`vlroute.errors.VlrouteError` naming it, at
    once."""
    ray = require("ray", extra="ray")
    if ray.is_initialized():
        return False
    local = address in (None, "", "local")
    if not local and address != "auto":
        _check_reachable(str(address))
    try:
        if not local:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a local Ray instance" if local else f"the Ray cluster at {address!r}"
        raise VlrouteError(f"cannot connect to {where}: {exc}. Start one with `ray start "
                           "--head` and pass its address (host:port), or leave the address "
                           "out to start a local instance.") from exc
    return True


def _check_reachable(address: str) -> None:
    """Fail at once, naming ``address``, when nothing answers there (ray.init would retry
    for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise VlrouteError(f"Ray address {address!r}: expected HOST:PORT (the address `ray "
                           "start --head` prints, e.g. 10.0.0.5:6379), ray://HOST:PORT or "
                           "auto.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise VlrouteError(f"cannot reach the Ray cluster at {address!r} ({exc}); start it "
                           "with `ray start --head` there, or leave the address out to start "
                           "a local instance.") from None


__all__ = ["connect"]
