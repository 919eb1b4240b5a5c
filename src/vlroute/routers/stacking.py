"""Routers fitted on out-of-fold predictions: a stacked ensemble and calibrated quality.

Both split the train split into grouped folds (a question's variants stay in one fold), fit
their member routers on all folds but one, and predict the one left out: every train request
then has predictions from routers that never saw its question, which is what a router sees
at serving time. On those out-of-fold predictions

- :class:`StackRouter` fits, per model, a small logistic regression over its members'
  predicted logits (kNN, task prior, IRT by default): weights that say how far to trust
  each member, and calibrated output, since the combiner is itself fitted to the outcomes;
- :class:`CalibratedRouter` fits, per model, an isotonic (or Platt) map from one router's
  prediction to the observed quality, so that P(solved) >= tau means what it says.

The dev split is never used here: it stays for selection. The members are then refitted on
the whole train split. Graded labels are soft targets throughout. Neither reads request hints:
their maps were fitted on predictions made without them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from vlroute._typing import FloatArray
from vlroute.data.matrices import RoutingMatrices
from vlroute.routers._params import Constraint, Interval, Name, Options
from vlroute.routers.base import grouped_holdout
from vlroute.routers.priors import task_codes
from vlroute.routers.quality import QualityRouter

#: the routers that can be members (their fitted state is a dict of arrays)
MEMBERS = ("knn", "prior", "blend", "irt", "mf", "mlp", "linear")
EPS = 1e-3


def grouped_folds(groups: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..folds-1) of each row; rows of one group share a fold."""
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    order = np.random.default_rng(seed).permutation(n_groups)
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    fold_of_group[order] = np.arange(n_groups) % max(1, min(folds, n_groups))
    out: np.ndarray = fold_of_group[codes]
    return out


def logit(p: FloatArray) -> FloatArray:
    """log(p / (1 - p)) with p clipped to [EPS, 1 - EPS]."""
    q = np.clip(p, EPS, 1 - EPS)
    out: FloatArray = np.log(q / (1 - q))
    return out


def soft_logistic(F: FloatArray, y: FloatArray, l2: float, *,
                  prior: FloatArray | None = None, offset: FloatArray | None = None,
                  intercept_prior: float | None = None) -> tuple[FloatArray, float]:
    """Weights and intercept of a logistic regression of targets ``y`` in [0, 1] (soft
    labels allowed) on ``F`` (n, k), with ``offset`` added to the logit and an L2 penalty of
    ``l2`` pulling the weights towards ``prior`` (default 0); the intercept is free unless
    ``intercept_prior`` is given, which it is then pulled towards as well (a few labels that
    are all 1 then mean "good", not "certain")."""
    from scipy.optimize import minimize

    n, k = F.shape
    w0 = np.zeros(k) if prior is None else np.asarray(prior, dtype=float)
    off = np.zeros(n) if offset is None else offset

    c0 = 0.0 if intercept_prior is None else float(intercept_prior)
    c_l2 = 0.0 if intercept_prior is None else l2

    def objective(v: FloatArray) -> tuple[float, FloatArray]:
        w, c = v[:k], v[k]
        z = F @ w + c + off
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        loss = np.logaddexp(0, z) - y * z
        grad_z = (p - y) / max(n, 1)
        value = float(loss.mean() + (l2 * ((w - w0) ** 2).sum() + c_l2 * (c - c0) ** 2)
                      / (2 * max(n, 1)))
        grad = np.r_[F.T @ grad_z + l2 * (w - w0) / max(n, 1),
                     grad_z.sum() + c_l2 * (c - c0) / max(n, 1)]
        return value, grad

    start = np.r_[w0, c0]
    fitted = minimize(objective, start, jac=True, method="L-BFGS-B")
    return fitted.x[:k], float(fitted.x[k])


class _OutOfFold(QualityRouter):
    """Shared machinery: fitting member routers on rows of the train split, out of fold."""

    folds: int

    def _fit(self, train: RoutingMatrices, X: FloatArray | None) -> None:
        self.group_codes_ = np.unique(train.groups.astype(str), return_inverse=True)[1]
        self.task_codes_, self.task_names_ = task_codes(train.tasks)
        super()._fit(train, X)

    def _member_state(self, member: QualityRouter, rows: np.ndarray, X: FloatArray,
                      quality: FloatArray) -> Any:
        """``member`` fitted on ``rows`` (what its ``_fit`` would set, from this router's
        fitted row labels)."""
        member._holdout_train = grouped_holdout(self.group_codes_[rows],
                                                member.holdout_fraction)
        member._codes = self.task_codes_[rows]               # type: ignore[attr-defined]
        member._task_names = self.task_names_                # type: ignore[attr-defined]
        return member._fit_estimator(X[rows], quality[rows])

    def _out_of_fold(self, members: list[QualityRouter], X: FloatArray,
                     quality: FloatArray) -> list[FloatArray]:
        """Each member's out-of-fold predictions on every train row."""
        fold = grouped_folds(self.group_codes_, self.folds)
        out = [np.full(quality.shape, np.nan) for _ in members]
        for k in np.unique(fold):
            fit_rows, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            for j, member in enumerate(members):
                state = self._member_state(member, fit_rows, X, quality)
                out[j][held] = member._predict(state, X[held])
        return out


def _member(name: str) -> QualityRouter:
    from vlroute.routers import make_router

    router = make_router(name, candidates="all")
    assert isinstance(router, QualityRouter)
    return router


def _prefixed(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _part(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(f"{prefix}."): v for k, v in state.items()
            if k.startswith(f"{prefix}.")}


class StackRouter(_OutOfFold):
    """A stacked ensemble: per model, a logistic regression over the members' predicted
    logits, fitted on their grouped out-of-fold predictions on the train split.

    Parameters
    ----------
    members : str
        Comma-separated member routers (default params), from :data:`MEMBERS`.
    folds : int
        Grouped folds of the train split.
    l2 : float
        L2 penalty of the combiner's weights (per model; pulls towards an equal mix).
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "members": Name(), "folds": Interval(int, 2), "l2": Interval(float, 0),
        "candidates": Options(("all", "pareto"))}

    def __init__(self, *, members: str = "knn,prior,irt", folds: int = 5, l2: float = 1.0,
                 candidates: str = "all") -> None:
        self.members = members
        self.folds = folds
        self.l2 = l2
        self.candidates = candidates

    def _names(self) -> list[str]:
        names = [n.strip() for n in str(self.members).split(",") if n.strip()]
        bad = [n for n in names if n not in MEMBERS]
        if not names or bad:
            raise ValueError(f"stack members must be a comma-separated list from "
                             f"{', '.join(MEMBERS)}; got {self.members!r}.")
        return names

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        names = self._names()
        members = [_member(n) for n in names]
        oof = self._out_of_fold(members, X, quality)
        m = quality.shape[1]
        w, c = np.zeros((m, len(members))), np.zeros(m)
        equal = np.full(len(members), 1.0 / len(members))
        for k in range(m):
            rows = np.isfinite(quality[:, k]) & np.all([np.isfinite(o[:, k]) for o in oof], 0)
            if not rows.any():
                w[k] = equal
                continue
            F = np.stack([logit(o[rows, k]) for o in oof], axis=1)
            w[k], c[k] = soft_logistic(F, np.clip(quality[rows, k], 0, 1), self.l2,
                                       prior=equal)
        everything = np.arange(len(X))
        state: dict[str, Any] = {"w": w, "c": c}
        for j, member in enumerate(members):
            state.update(_prefixed(self._member_state(member, everything, X, quality), f"m{j}"))
        return state

    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        z = np.broadcast_to(state["c"], (len(X), len(state["c"]))).copy()
        for j, name in enumerate(self._names()):
            member = _member(name)
            p = member._predict(_part(state, f"m{j}"), X)
            z += logit(p) * state["w"][:, j]
        out: FloatArray = 1.0 / (1.0 + np.exp(-z))
        return out


class CalibratedRouter(_OutOfFold):
    """One router's per-model predictions, mapped to the outcomes by isotonic regression
    (or Platt scaling) fitted on its grouped out-of-fold predictions on the train split.

    Parameters
    ----------
    base : str
        The router calibrated (default params), from :data:`MEMBERS`.
    method : str
        "isotonic" or "platt".
    folds : int
        Grouped folds of the train split.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "base": Options(MEMBERS), "method": Options(("isotonic", "platt")),
        "folds": Interval(int, 2), "candidates": Options(("all", "pareto"))}

    def __init__(self, *, base: str = "knn", method: str = "isotonic", folds: int = 5,
                 candidates: str = "all") -> None:
        self.base = base
        self.method = method
        self.folds = folds
        self.candidates = candidates

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        base = _member(self.base)
        (oof,) = self._out_of_fold([base], X, quality)
        m = quality.shape[1]
        knots: list[tuple[FloatArray, FloatArray]] = []
        platt = np.zeros((m, 2))
        for k in range(m):
            rows = np.isfinite(quality[:, k]) & np.isfinite(oof[:, k])
            p, y = oof[rows, k], np.clip(quality[rows, k], 0, 1)
            if self.method == "platt":
                if rows.any():
                    (a,), b = soft_logistic(logit(p)[:, None], y, 1.0, prior=np.ones(1))
                    platt[k] = a, b
                else:
                    platt[k] = 1.0, 0.0
            else:
                knots.append(_isotonic(p, y))
        state: dict[str, Any] = _prefixed(
            self._member_state(base, np.arange(len(X)), X, quality), "base")
        if self.method == "platt":
            state["platt"] = platt
        else:
            width = max(len(x) for x, _ in knots)
            state["iso_x"] = np.array([np.pad(x, (0, width - len(x)), mode="edge")
                                       for x, _ in knots])
            state["iso_y"] = np.array([np.pad(y, (0, width - len(y)), mode="edge")
                                       for _, y in knots])
        return state

    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        raw = _member(self.base)._predict(_part(state, "base"), X)
        if "platt" in state:
            a, b = state["platt"][:, 0], state["platt"][:, 1]
            out: FloatArray = 1.0 / (1.0 + np.exp(-(logit(raw) * a + b)))
            return out
        return np.stack([np.interp(raw[:, k], state["iso_x"][k], state["iso_y"][k])
                         for k in range(raw.shape[1])], axis=1)


def _isotonic(p: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Knots of the isotonic map from predictions ``p`` to outcomes ``y`` (identity when
    there is nothing to fit)."""
    from sklearn.isotonic import IsotonicRegression

    if len(p) < 2 or np.ptp(p) == 0:
        level = float(y.mean()) if len(y) else 0.5
        return np.array([0.0, 1.0]), np.array([level, level])
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return (np.asarray(fitted.X_thresholds_, dtype=float),
            np.asarray(fitted.y_thresholds_, dtype=float))
