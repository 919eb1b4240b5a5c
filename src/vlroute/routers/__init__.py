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
LEARNED = ("knn", "linear", "gbdt")
#: the router `vlroute demo` trains and the gateway will serve: kNN supports both scenario
#: families and decides in well under a millisecond; to be revisited when bench/routers.py
#: compares every router on dev splits
DEFAULT_ROUTER = "knn"
ROUTERS.register("knn", "vlroute.routers.quality:KNNRouter")
ROUTERS.register("linear", "vlroute.routers.quality:LinearRouter")
ROUTERS.register("gbdt", "vlroute.routers.quality:GBDTRouter")


def make_router(name: str, **params: object) -> BaseRouter:
    """A fresh router for a registry name (with constructor ``params``) or
    ``single:<model id>``."""
    if name.startswith("single:"):
        from vlroute.routers.baselines import SingleModelRouter

        model = name.removeprefix("single:")
        if not model:
            raise UnknownComponentError("'single:' needs a model id, e.g. single:gpt-4o-mini.")
        return SingleModelRouter(model=model)
    return ROUTERS.get(name)(**params)


__all__ = ["BASELINES", "DEFAULT_ROUTER", "LEARNED", "ROUTERS", "BaseRouter", "make_router"]
