"""Routers: the registry and the shared contract.

Names: the training-free baselines ``oracle``, ``strongest_global``, ``cheapest_global``,
``strongest_per_dataset``, ``random``, ``best_single_by_rank``; ``single:<model id>`` builds a
fixed single-model router.
"""

from __future__ import annotations

from vlroute._registry import Registry
from vlroute.errors import UnknownComponentError
from vlroute.routers.base import BaseRouter

ROUTERS: Registry[type[BaseRouter]] = Registry("router")
BASELINES = ("oracle", "strongest_global", "cheapest_global", "strongest_per_dataset", "random",
             "best_single_by_rank")
_MODULE = "vlroute.routers.baselines"
for _name, _cls in zip(BASELINES, ("OracleRouter", "StrongestGlobalRouter",
                                   "CheapestGlobalRouter", "StrongestPerDatasetRouter",
                                   "RandomRouter", "BestSingleByRankRouter"), strict=True):
    ROUTERS.register(_name, f"{_MODULE}:{_cls}")


def make_router(name: str) -> BaseRouter:
    """A fresh router for a registry name or ``single:<model id>``."""
    if name.startswith("single:"):
        from vlroute.routers.baselines import SingleModelRouter

        model = name.removeprefix("single:")
        if not model:
            raise UnknownComponentError("'single:' needs a model id, e.g. single:gpt-4o-mini.")
        return SingleModelRouter(model=model)
    return ROUTERS.get(name)()


__all__ = ["BASELINES", "ROUTERS", "BaseRouter", "make_router"]
