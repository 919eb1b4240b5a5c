"""Quality routers built on what models share: the task a request belongs to, predicted from
the request itself, and blends with the kNN router; and the constant router a dev-selected
"single model" bundle serves.

A request carries no task tag here: :class:`TaskPriorRouter` learns P(task | features) on the
train split (the bench's task column is a training target, never a request feature) and
predicts sum_t P(t | x) * prior(t, m), with prior(t, m) the smoothed training mean quality of
model m on task t. Tasks whose names say they were derived from model outcomes (Vibe-Eval's
``difficulty-*``) are not used: the prior is then the global mean.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from vlroute._typing import FloatArray
from vlroute.data.matrices import RoutingMatrices
from vlroute.routers._params import Constraint, Interval, Name, Options
from vlroute.routers.quality import CANDIDATES, KNNRouter, QualityRouter, group_centroids

#: task names with these prefixes were derived from how models did: never a routing signal
OUTCOME_TASKS = ("difficulty",)


def task_codes(tasks: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Integer codes of usable task names and the names (outcome-derived tasks and blanks
    fold into one class)."""
    names = np.array(["" if (t is None or str(t).startswith(OUTCOME_TASKS) or t != t)
                      else str(t) for t in tasks], dtype=object)
    uniques, codes = np.unique(names.astype(str), return_inverse=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


class TaskPriorRouter(QualityRouter):
    """Per-task prior quality, weighted by the task predicted from the request's features.

    Parameters
    ----------
    smoothing : float
        Pseudo-count of the global mean in each task's mean (small tasks lean on it).
    C : float
        Inverse regularisation of the multinomial logistic regression P(task | x).
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "smoothing": Interval(float, 0), "C": Interval(float, 0, open_low=True),
        "candidates": CANDIDATES}

    def __init__(self, *, smoothing: float = 20.0, C: float = 0.05,
                 candidates: str = "all") -> None:
        self.smoothing = smoothing
        self.C = C
        self.candidates = candidates

    hints: ClassVar[tuple[str, ...]] = ("task",)

    def _fit(self, train: RoutingMatrices, X: FloatArray | None) -> None:
        self._codes, self._task_names = task_codes(train.tasks)
        super()._fit(train, X)

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        codes, n_tasks = self._codes, int(self._codes.max()) + 1 if len(self._codes) else 1
        finite = np.isfinite(quality)
        q = np.where(finite, quality, 0.0)
        overall = q.sum(0) / np.maximum(finite.sum(0), 1)
        sums, counts = np.zeros((n_tasks, q.shape[1])), np.zeros((n_tasks, q.shape[1]))
        np.add.at(sums, codes, q)
        np.add.at(counts, codes, finite)
        prior = (sums + self.smoothing * overall) / (counts + self.smoothing)
        state: dict[str, Any] = {"prior": prior, "codes": codes,
                                 "names": np.array(self._task_names, dtype=str)}
        if n_tasks > 1:
            scaler = StandardScaler().fit(X)
            model = LogisticRegression(C=self.C, max_iter=500).fit(scaler.transform(X), codes)
            present = np.zeros(n_tasks, dtype=bool)
            present[model.classes_] = True
            state.update(mean=scaler.mean_, scale=scaler.scale_, coef=model.coef_,
                         intercept=model.intercept_, classes=model.classes_)
            if len(model.classes_) == 2:            # sklearn's binary form: one row
                state["coef"] = np.vstack([-model.coef_, model.coef_]) / 2
                state["intercept"] = np.r_[-model.intercept_, model.intercept_] / 2
        return state

    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        prior = state["prior"]
        if "coef" not in state:
            return np.broadcast_to(prior[0], (len(X), prior.shape[1])).copy()
        logits = ((X - state["mean"]) / state["scale"]) @ state["coef"].T + state["intercept"]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        out: FloatArray = p @ prior[state["classes"].astype(np.int64)]
        return out

    def _predict_hinted(self, state: Any, X: FloatArray, tasks: np.ndarray | None) -> FloatArray:
        """With a task hint the request sends (``x-vlroute-task``), that task's prior; without
        one, or for a task the train split did not have, the predicted mix."""
        out = self._predict(state, X)
        if tasks is None:
            return out
        index = {str(n): k for k, n in enumerate(state["names"]) if str(n)}
        for i, task in enumerate(tasks):
            k = index.get(str(task)) if task is not None else None
            if k is not None:
                out[i] = state["prior"][k]
        return out

    def import_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
        state = dict(arrays)
        self._codes = state["codes"]
        state.setdefault("names", np.array([], dtype=str))     # bundles from before hints
        self._task_names = [str(n) for n in state["names"]]
        return state


class BlendRouter(QualityRouter):
    """A convex blend of the kNN router's and the task prior's per-model quality: the kNN
    router knows near-duplicates, the prior knows the task; neither alone sees both.

    Parameters
    ----------
    prior_weight : float
        Weight of the task prior (1 - weight: kNN).
    n_neighbors, smoothing, C : the members' parameters.
    per : {"sample", "group"}
        Fit both members on the train requests, or on one row per train group (its
        centroid and mean quality, as :class:`~vlroute.routers.quality.KNNRouter`'s ``per``).
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "prior_weight": Interval(float, 0, 1), "n_neighbors": Interval(int, 1),
        "smoothing": Interval(float, 0), "C": Interval(float, 0, open_low=True),
        "candidates": CANDIDATES, "per": Options(("sample", "group"))}

    def __init__(self, *, prior_weight: float = 0.5, n_neighbors: int = 60,
                 smoothing: float = 20.0, C: float = 0.05, candidates: str = "all",
                 per: str = "sample") -> None:
        self.prior_weight = prior_weight
        self.n_neighbors = n_neighbors
        self.smoothing = smoothing
        self.C = C
        self.candidates = candidates
        self.per = per

    def _members(self) -> tuple[KNNRouter, TaskPriorRouter]:
        return (KNNRouter(n_neighbors=self.n_neighbors, candidates="all"),
                TaskPriorRouter(smoothing=self.smoothing, C=self.C))

    hints: ClassVar[tuple[str, ...]] = ("task",)

    def _fit(self, train: RoutingMatrices, X: FloatArray | None) -> None:
        if self.per == "group":
            assert X is not None
            train, X = group_centroids(train, X)
        self._codes, self._task_names = task_codes(train.tasks)
        super()._fit(train, X)

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        knn, prior = self._members()
        prior._codes, prior._task_names = self._codes, self._task_names
        return {**{f"knn.{k}": v for k, v in knn._fit_estimator(X, quality).items()},
                **{f"prior.{k}": v for k, v in prior._fit_estimator(X, quality).items()}}

    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        return self._predict_hinted(state, X, None)

    def _predict_hinted(self, state: Any, X: FloatArray, tasks: np.ndarray | None) -> FloatArray:
        knn, prior = self._members()
        part = {name: {k.removeprefix(f"{name}."): v for k, v in state.items()
                       if k.startswith(f"{name}.")} for name in ("knn", "prior")}
        out: FloatArray = ((1 - self.prior_weight) * knn._predict(part["knn"], X)
                           + self.prior_weight * prior._predict_hinted(part["prior"], X,
                                                                        tasks))
        return out

    def import_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
        state = dict(arrays)
        self._codes = state["prior.codes"]
        state.setdefault("prior.names", np.array([], dtype=str))
        self._task_names = [str(n) for n in state["prior.names"]]
        return state


class ConstantRouter(QualityRouter):
    """Always one model: what a dev-selected "single model" bundle serves (predictions are
    the training mean quality of every model, so /v1/route still shows them).

    Parameters
    ----------
    model : str
        The model chosen.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {"model": Name()}

    def __init__(self, *, model: str = "") -> None:
        self.model = model
        self.candidates = "all"

    def _fit(self, train: RoutingMatrices, X: FloatArray | None) -> None:
        if self.model not in train.models:
            raise ValueError(f"constant router: model {self.model!r} is not among "
                             f"{', '.join(train.models)}.")
        super()._fit(train, X)
        self.allowed_ = np.array([m == self.model for m in train.models])

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        finite = np.isfinite(quality)
        return {"mean": np.where(finite, quality, 0.0).sum(0) / np.maximum(finite.sum(0), 1)}

    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        return np.broadcast_to(state["mean"], (len(X), len(state["mean"]))).copy()
