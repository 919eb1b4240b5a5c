"""A new model for a fitted router, from a few labelled samples, without retraining.

The IRT and matrix-factorisation routers read every request through a shared request side
(IRT: a(x) and difficulty b(x); MF: the projection P x) and give each model only a small
weight vector. :func:`add_model` fits the new model's vector (and bias) by a logistic
regression on that frozen request side, pulled towards the mean of the existing models'
vectors and its bias towards theirs (a model known from 25 samples starts as an average model
and moves as far as its labels say); every other parameter stays as it was. The labelled
samples join the router's stored train rows (the other models' outcomes unknown there), so a
P(solved) refit at another MES (graded labels) sees them; that refit fits every model anew.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from vlroute._typing import FloatArray
from vlroute.errors import VlrouteError
from vlroute.objectives import pareto_frontier
from vlroute.routers.irt import IRTRouter
from vlroute.routers.mf import MFRouter
from vlroute.routers.quality import QualityRouter
from vlroute.routers.stacking import soft_logistic

#: routers whose models are a weight vector on a shared request side
EXTENSIBLE = (IRTRouter, MFRouter)


class NotExtensibleError(VlrouteError):
    """The router has no per-model weights to fit a new model into."""


def _request_side(router: QualityRouter, X: FloatArray
                  ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(H, offset, weights, biases): logit(x, m) = H(x) . weights[m] + biases[m] + offset(x)."""
    state = router.state_
    if isinstance(router, IRTRouter):
        H, offset = router.head(state, X)
        theta, beta = router.model_weights(state)
        return H, offset, theta, beta
    if isinstance(router, MFRouter):
        Z = (X - state["mean"]) / state["scale"]
        H = Z @ state["W0"].T + state["b0"]
        return H, np.zeros(len(X)), np.asarray(state["W1"]), np.asarray(state["b1"])
    raise NotExtensibleError(
        f"a new model can be added to irt and mf routers (a weight vector per model on a "
        f"shared request side), not to {type(router).__name__}; retrain with the new "
        "model's outcomes instead.")


def add_model(router: QualityRouter, model: str, X: FloatArray, quality: FloatArray, *,
              tier: str, mean_cost: Mapping[str, float], l2: float = 1.0) -> QualityRouter:
    """A copy of ``router`` that also routes to ``model``, fitted from its outcomes
    ``quality`` (n,) in [0, 1] on requests with features ``X`` (n, n_features); ``tier``
    and ``mean_cost`` (usd, latency, energy per request) are the new model's."""
    if not isinstance(router, EXTENSIBLE):
        _request_side(router, X[:0])                          # raises NotExtensibleError
    if model in router.models_:
        raise ValueError(f"model {model!r} is already one of the router's models.")
    quality = np.asarray(quality, dtype=float)
    if X.ndim != 2 or X.shape[0] != len(quality) or not len(quality):
        raise ValueError(f"X has shape {X.shape} for {len(quality)} outcomes; expected one "
                         "row of features per labelled sample, and at least one sample.")
    if not np.isfinite(quality).all() or (quality < 0).any() or (quality > 1).any():
        raise ValueError("outcomes must be quality scores in [0, 1] (no missing values).")
    missing = [d for d in ("usd", "latency", "energy") if d not in mean_cost]
    if missing:
        raise ValueError(f"mean_cost lacks {', '.join(missing)}.")
    router._check_features(X, len(X))
    H, offset, weights, biases = _request_side(router, X)
    if router.binary_ and not np.isin(quality, (0.0, 1.0)).all():
        raise ValueError("the router was trained on 0/1 outcomes; the new model's outcomes "
                         "must be 0 or 1 too (graded scores need a router trained on graded "
                         "labels).")
    w, b = soft_logistic(H, quality, l2, prior=weights.mean(0), offset=offset,
                         intercept_prior=float(biases.mean()))
    new = copy.deepcopy(router)
    state: dict[str, Any] = dict(new.state_)
    if isinstance(router, IRTRouter):
        state = router.with_model_weights(state, np.vstack([weights, w]), np.r_[biases, b])
    else:
        state.update(W1=np.vstack([weights, w]), b1=np.r_[biases, b])
    new.state_ = state
    new.models_ = (*router.models_, model)
    new.tiers_ = (*router.tiers_, tier)
    new.mean_quality_ = np.r_[router.mean_quality_, quality.mean()]
    new.mean_cost_ = {d: np.r_[router.mean_cost_[d], float(mean_cost[d])]
                      for d in ("usd", "latency", "energy")}
    new.allowed_ = np.r_[router.allowed_, True]
    if getattr(router, "candidates", "all") == "pareto":      # the frontier with the new model
        new.allowed_[:] = False
        new.allowed_[pareto_frontier(new.mean_cost_["usd"].tolist(),
                                     new.mean_quality_.tolist())] = True
    n_old = router._quality_train.shape[0]
    new._X_train = np.vstack([router._X_train, X])
    new._quality_train = np.vstack([
        np.c_[router._quality_train, np.full(n_old, np.nan)],
        np.c_[np.full((len(X), len(router.models_)), np.nan), quality]])
    new._holdout_train = np.r_[router._holdout_train, np.zeros(len(X), dtype=bool)]
    new._by_mes = {}
    return new
