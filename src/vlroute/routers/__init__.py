"""Routers: the registry and the shared contract.

Names: the training-free baselines ``oracle``, ``strongest_global``, ``cheapest_global``,
``strongest_per_dataset``, ``random``, ``best_single_by_rank``; ``single:<model id>`` builds a
fixed single-model router. Quality routers (estimate each model's quality, so every scenario
applies): ``knn``, ``linear``, ``gbdt``, ``ovr``, ``mlp``, ``mf``, ``prior`` (the task predicted
from the request, times each task's prior), ``blend`` (kNN and prior), ``constant`` (one
model), ``irt`` (item response theory: models share the requests' difficulty), ``stack``
(a logistic combiner over members' out-of-fold predictions), ``calibrated`` (a router's
predictions mapped by isotonic or Platt calibration fitted out of fold). Policy routers (trained for
one trade-off, utility family only): ``prknn``, ``prototype``, ``linear_soft``, ``mlp_soft``.
End-to-end routers on token features (:mod:`vlroute.routers.e2e`): ``vlc``, ``zooter``,
``routerdc``, ``cosinecls`` (policy), ``vlc_q``, ``zooter_q``, ``routerdc_q``, ``cosinecls_q``
(quality mode) and ``ecvl`` (scenario-conditioned).
"""

from __future__ import annotations

from collections.abc import Mapping

from vlroute._registry import Registry
from vlroute.errors import ParameterError, UnknownComponentError
from vlroute.routers import _params
from vlroute.routers.base import BaseRouter

ROUTERS: Registry[type[BaseRouter]] = Registry("router")
BASELINES = ("oracle", "strongest_global", "cheapest_global", "strongest_per_dataset", "random",
             "best_single_by_rank")
_MODULE = "vlroute.routers.baselines"
for _name, _cls in zip(BASELINES, ("OracleRouter", "StrongestGlobalRouter",
                                   "CheapestGlobalRouter", "StrongestPerDatasetRouter",
                                   "RandomRouter", "BestSingleByRankRouter"), strict=True):
    ROUTERS.register(_name, f"{_MODULE}:{_cls}")
QUALITY = ("knn", "linear", "gbdt", "ovr", "mlp", "mf", "prior", "blend", "irt", "stack",
           "calibrated")
POLICY = ("prknn", "prototype", "linear_soft", "mlp_soft")
LEARNED = QUALITY + POLICY
#: end-to-end routers on token features (``--routers e2e``; not in ``all`` nor ``auto``'s
#: search: each trains a transformer): VL-RouterBench's four as policy routers, their
#: quality-mode variants, and the ECVL scenario-conditioned router
E2E_POLICY = ("vlc", "zooter", "routerdc", "cosinecls")
E2E = (*E2E_POLICY, "vlc_q", "zooter_q", "routerdc_q", "cosinecls_q", "ecvl")
#: the router `vlroute demo` trains and the gateway will serve: kNN supports both scenario
#: families and decides in well under a millisecond; to be revisited when bench/routers.py
#: compares every router on dev splits
DEFAULT_ROUTER = "knn"
ROUTERS.register("knn", "vlroute.routers.quality:KNNRouter")
ROUTERS.register("linear", "vlroute.routers.quality:LinearRouter")
ROUTERS.register("gbdt", "vlroute.routers.quality:GBDTRouter")
ROUTERS.register("ovr", "vlroute.routers.ovr:OVRRouter")
ROUTERS.register("mlp", "vlroute.routers.mlp:MLPRouter")
ROUTERS.register("mf", "vlroute.routers.mf:MFRouter")
ROUTERS.register("prior", "vlroute.routers.priors:TaskPriorRouter")
ROUTERS.register("blend", "vlroute.routers.priors:BlendRouter")
ROUTERS.register("irt", "vlroute.routers.irt:IRTRouter")
ROUTERS.register("stack", "vlroute.routers.stacking:StackRouter")
ROUTERS.register("calibrated", "vlroute.routers.stacking:CalibratedRouter")
#: one model always (a dev-selected single model, served as a bundle)
ROUTERS.register("constant", "vlroute.routers.priors:ConstantRouter")
ROUTERS.register("prknn", "vlroute.routers.neighbours:PRkNNRouter")
ROUTERS.register("prototype", "vlroute.routers.neighbours:PrototypeRouter")
ROUTERS.register("linear_soft", "vlroute.routers.mlp:LinearPolicyRouter")
ROUTERS.register("mlp_soft", "vlroute.routers.mlp:MLPPolicyRouter")
for _name, _cls in (("vlc", "VLCRouter"), ("zooter", "ZooterRouter"),
                    ("routerdc", "RouterDCRouter"), ("cosinecls", "CosineClsRouter"),
                    ("vlc_q", "VLCQualityRouter"), ("zooter_q", "ZooterQualityRouter"),
                    ("routerdc_q", "RouterDCQualityRouter"),
                    ("cosinecls_q", "CosineClsQualityRouter"), ("ecvl", "ECVLRouter")):
    ROUTERS.register(_name, f"vlroute.routers.e2e:{_cls}")


def check_params(name: str, params: Mapping[str, object]) -> None:
    """Raise unless router ``name`` takes every one of ``params`` with an accepted value.

    An unknown name raises :class:`~vlroute.errors.UnknownComponentError`; an unknown
    parameter (with the close matches and the valid names) or a refused value (wrong type,
    out of range) raises :class:`~vlroute.errors.ParameterError`. The constructor signature
    is the schema; the values each accepts are its class's ``_parameter_constraints``.
    """
    if name.startswith("single:"):
        if params:
            raise ParameterError(f"{name}: a single-model router takes no parameters, "
                                 f"got {', '.join(sorted(params))}.")
        return
    _params.check_params(name, ROUTERS.get(name), params)


def make_router(name: str, **params: object) -> BaseRouter:
    """A fresh router for a registry name (with constructor ``params``, checked by
    :func:`check_params`) or ``single:<model id>``."""
    check_params(name, params)
    if name.startswith("single:"):
        from vlroute.routers.baselines import SingleModelRouter

        model = name.removeprefix("single:")
        if not model:
            raise UnknownComponentError("'single:' needs a model id, e.g. single:gpt-4o-mini.")
        return SingleModelRouter(model=model)
    return ROUTERS.get(name)(**params)


__all__ = ["BASELINES", "DEFAULT_ROUTER", "E2E", "E2E_POLICY", "LEARNED", "POLICY", "QUALITY",
           "ROUTERS", "BaseRouter", "check_params", "make_router"]
