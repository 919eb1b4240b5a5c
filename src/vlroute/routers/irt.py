"""Item-response-theory router: models share one difficulty structure.

P(model m solves request x) = sigmoid(a(x) . theta_m + beta_m - b(x)): the request's
discrimination vector a(x) and difficulty b(x) are linear in its (whitened, PCA-reduced)
features, and every model has one ability vector theta_m and bias beta_m. A request that is
hard is hard for all models at once, so the difficulty the models agree on is learned from
all their labels together; a model with few labels borrows it (that is also what lets
:mod:`vlroute.routers.extend` add a new model from a few labelled samples).

Fitted by full-batch Adam on CPU (seconds at the shared sets' sizes), binary cross-entropy
with graded scores as soft targets, early stopping on the grouped hold-out of the train
split; the fitted state is numpy arrays (routing needs no torch).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from vlroute._optional import require
from vlroute._typing import FloatArray
from vlroute.routers._arrays import standardiser
from vlroute.routers._params import Constraint, Interval
from vlroute.routers.mlp import POSITIVE, _sigmoid
from vlroute.routers.quality import CANDIDATES, SEED, QualityRouter


def whitening(X: FloatArray, components: int) -> dict[str, np.ndarray]:
    """Standardise ``X``, then project on its top principal components scaled to unit
    variance: ``z = ((x - mean) / scale) @ proj``."""
    norm = standardiser(X)
    Z = (X - norm["mean"]) / norm["scale"]
    from sklearn.utils.extmath import randomized_svd

    k = max(1, min(components, Z.shape[0] - 1, Z.shape[1]))
    _, s, vt = randomized_svd(Z - Z.mean(0), k, random_state=0)
    sd = s / np.sqrt(max(len(Z) - 1, 1))
    proj = vt.T / np.where(sd > 1e-12, sd, 1.0)
    return {"mean": norm["mean"], "scale": norm["scale"], "proj": proj}


def whiten(state: dict[str, np.ndarray], X: FloatArray) -> FloatArray:
    """Features in the whitened space of :func:`whitening`."""
    out: FloatArray = ((X - state["mean"]) / state["scale"]) @ state["proj"]
    return out


class IRTRouter(QualityRouter):
    """Multidimensional IRT with feature-predicted item parameters.

    Parameters
    ----------
    dims : int
        Dimension of the ability vectors theta_m (and of a(x)).
    components : int
        Principal components of the standardised features the item parameters are read from.
    weight_decay : float
        L2 penalty on every weight (strong by default: the labels are noisy 0/1 outcomes).
    learning_rate, max_epochs, patience, random_state : full-batch Adam, early stopping on
        the grouped hold-out.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        "dims": Interval(int, 1), "components": Interval(int, 1),
        "weight_decay": Interval(float, 0), "learning_rate": POSITIVE,
        "max_epochs": Interval(int, 1), "patience": Interval(int, 1), "random_state": SEED,
        "candidates": CANDIDATES}

    def __init__(self, *, dims: int = 4, components: int = 64,
                 weight_decay: float = 1e-2, learning_rate: float = 0.02,
                 max_epochs: int = 400, patience: int = 20, random_state: int = 0,
                 candidates: str = "all") -> None:
        self.dims = dims
        self.components = components
        self.weight_decay = weight_decay
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.patience = patience
        self.random_state = random_state
        self.candidates = candidates

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        white = whitening(X, self.components)
        Z = whiten(white, X)
        mask = np.isfinite(quality)
        params = _train_irt(Z, np.where(mask, np.clip(quality, 0, 1), 0.0), mask.astype(float),
                            self._holdout_train, dims=self.dims, lr=self.learning_rate,
                            weight_decay=self.weight_decay, epochs=self.max_epochs,
                            patience=self.patience, seed=self.random_state)
        return {**white, **params}

    def _predict(self, state: Any, X: FloatArray) -> FloatArray:
        H, offset = self.head(state, X)
        return _sigmoid(H @ state["theta"].T + state["beta"] + offset[:, None])

    def head(self, state: Any, X: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The request side: a(x) (n, dims) and -b(x) (n,); a model adds
        ``a(x) . theta_m + beta_m``."""
        Z = whiten(state, X)
        offset: FloatArray = -(Z @ state["wb"] + state["cb"])
        return Z @ state["A"].T, offset

    @staticmethod
    def model_weights(state: Any) -> tuple[FloatArray, FloatArray]:
        """(theta (n_models, dims), beta (n_models,))."""
        return np.asarray(state["theta"]), np.asarray(state["beta"])

    @staticmethod
    def with_model_weights(state: Any, theta: FloatArray, beta: FloatArray) -> Any:
        """A copy of ``state`` with other model weights."""
        return {**state, "theta": theta, "beta": beta}


def _train_irt(Z: FloatArray, Y: FloatArray, M: FloatArray,  # noqa: PLR0913 - the problem
               holdout: np.ndarray, *, dims: int, lr: float, weight_decay: float,
               epochs: int, patience: int, seed: int) -> dict[str, np.ndarray]:
    torch = require("torch", extra="encoders")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)         # small full-batch products: threads only contend
    try:
        return _adam_irt(torch, Z, Y, M, holdout, dims=dims, lr=lr, weight_decay=weight_decay,
                         epochs=epochs, patience=patience, seed=seed)
    finally:
        torch.set_num_threads(threads)


def _adam_irt(torch: Any, Z: FloatArray, Y: FloatArray,  # noqa: PLR0913 - the problem
              M: FloatArray, holdout: np.ndarray, *, dims: int, lr: float,
              weight_decay: float, epochs: int, patience: int, seed: int
              ) -> dict[str, np.ndarray]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d, m = Z.shape[1], Y.shape[1]
        A = torch.nn.Parameter(torch.randn(dims, d) * 0.01)
        wb = torch.nn.Parameter(torch.zeros(d))
        cb = torch.nn.Parameter(torch.zeros(()))
        theta = torch.nn.Parameter(torch.randn(m, dims) * 0.1)
        beta = torch.nn.Parameter(torch.zeros(m))
        weights, biases = [A, wb, theta], [cb, beta]
        opt = torch.optim.Adam([*weights, *biases], lr=lr)
        tZ, tY, tM = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                      for a in (Z, Y, M))
        fit = torch.from_numpy(~holdout)
        val = torch.from_numpy(holdout)

        def loss(rows: Any, penalty: bool) -> Any:
            logits = (tZ[rows] @ A.T) @ theta.T + beta - (tZ[rows] @ wb + cb)[:, None]
            per = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, tY[rows], reduction="none") * tM[rows]
            value = per.sum() / tM[rows].sum().clamp(min=1.0)
            if penalty:
                value = value + weight_decay * sum((w ** 2).sum() for w in weights) / 2
            return value

        best, best_state, waited = np.inf, None, 0
        for _ in range(epochs):
            opt.zero_grad()
            loss(fit, True).backward()
            opt.step()
            if not holdout.any():
                continue
            with torch.no_grad():
                current = float(loss(val, False))
            if current < best - 1e-5:
                best, waited = current, 0
                best_state = [p.detach().clone() for p in (A, wb, cb, theta, beta)]
            else:
                waited += 1
                if waited >= patience:
                    break
        values = best_state or [p.detach() for p in (A, wb, cb, theta, beta)]
    names = ("A", "wb", "cb", "theta", "beta")
    return {n: v.numpy().astype(np.float64).copy() for n, v in zip(names, values, strict=True)}
