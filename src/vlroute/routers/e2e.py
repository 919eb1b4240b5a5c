"""End-to-end routers on token-level features: VL-RouterBench's VLC, ZOOTER, RouterDC and
CosineCls, their quality-mode variants, and the ECVL scenario-conditioned router.

All read :class:`~vlroute.tokens.Tokens` (``vlroute features DIR --tokens``: frozen MiniLM
token states and EfficientNet-Lite0's 49 image tokens, in place of the reference code's
ViT-B/16 + LXMERT) through the fusion transformer of :mod:`vlroute.routers._fusion`.
With ``tune_text_layer=True`` (tokens stored with ``--text-states penultimate``) MiniLM's
last layer is fine-tuned with the fusion network instead of being read frozen.

- ``vlc``: pooled output -> dropout 0.1 -> linear head; soft cross-entropy on the
  label_lambda soft labels (hard labels for inf); requests no model solves are dropped.
- ``zooter``: the same classifier; KL divergence to the soft labels; requests no model solves
  are kept, labelled with their cheapest model; learning rate 1e-5.
- ``routerdc``: L2-normalised request embedding against K learned, normalised model
  embeddings, logits = exp(s) * cosine with s learned from log(1/0.07); loss = request-to-model
  contrastive over the top-3 label models (those with a positive label) + request-to-request
  InfoNCE where positives share a KMeans(k=5) cluster of the label vectors.
- ``cosinecls``: RouterDC's head and loss; at label_lambda = inf its targets are uniform over
  the correct models rather than the cheapest one.

These four are policy routers (argmax; utility scenario at cost_weight 0 only, anything else
raises :class:`~vlroute.errors.ScenarioMismatchError`). ``vlc_q``, ``zooter_q``, ``routerdc_q``
and ``cosinecls_q`` are their quality-mode variants: the same network and the method's loss
(at ``label_lambda``, default 0) plus sigmoid heads trained with binary cross-entropy on each
model's quality, which predict P(correct); every scenario applies and the gateway serves them.
On graded labels P(10 q >= MES) comes from per-model logistic regressions on the frozen
request embeddings of the train split (refitted per MES, as the feature-level routers do).

``ecvl`` adds a scenario token (MES and the cost dimension embedded) and one sigmoid head per
model giving P(10 q >= MES). Stage 1 trains on every model's outcomes (graded labels turned
into 1[10 q >= MES] for an MES drawn per request from the values seen; binary labels: the
token carries the cost dimension only); stage 2 fine-tunes the heads of the target edge/cloud
pair across scenarios. It decides with the scenario (the threshold family: stay on the edge
unless P(edge solves) < tau), as every quality router does.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from vlroute._typing import FloatArray, IntArray
from vlroute.data.matrices import RoutingMatrices
from vlroute.errors import NotFittedError
from vlroute.objectives import pareto_frontier, rank_score, solved
from vlroute.routers._fusion import (
    COST_DIMS,
    FusionConfig,
    build_net,
    export_state,
    import_state,
    predict_in_batches,
    torch_threads,
    train_fusion,
)
from vlroute.routers._params import Constraint, Flag, Interval, Name
from vlroute.routers.labels import soft_targets
from vlroute.routers.policy import PolicyRouter
from vlroute.routers.quality import CANDIDATES, SEED, QualityRouter
from vlroute.scenarios import Scenario
from vlroute.tokens import Tokens

POSITIVE = Interval(float, 0, open_low=True)
#: the label_lambda grid ``vlroute eval`` searches on dev for these routers on a CPU (each
#: value is a retraining); the full VL-RouterBench grid where a GPU trains them
CPU_LABEL_LAMBDAS = (0.0, 100.0, math.inf)
NETWORK: dict[str, Constraint] = {
    "learning_rate": POSITIVE, "weight_decay": Interval(float, 0),
    "d_model": Interval(int, 8), "n_layers": Interval(int, 1), "n_heads": Interval(int, 1),
    "batch_size": Interval(int, 1), "max_epochs": Interval(int, 1),
    "patience": Interval(int, 1), "random_state": SEED, "n_threads": Interval(int, 1),
    "tune_text_layer": Flag()}
LABELS: dict[str, Constraint] = {
    "label_lambda": Interval(float, 0, allow_inf=True), "cost_scale": POSITIVE}
#: RouterDC's positives per request and label clusters
TOP_POSITIVES, N_CLUSTERS, SS_TEMPERATURE = 3, 5, 0.07


def label_targets(method: str, quality: FloatArray, cost: FloatArray, label_lambda: float,
                  cost_scale: float = 100.0) -> tuple[FloatArray, np.ndarray]:
    """Targets (n, n_models) of ``method`` and which rows have one.

    Soft labels t(m) proportional to 1[correct] exp(-label_lambda * cost_scale * cost) over the
    models that solve a request (see :func:`vlroute.routers.labels.soft_targets`; inf: the
    cheapest best model). ZOOTER keeps the requests no model solves, labelled with their
    cheapest model; CosineCls at inf is uniform over the correct models.
    """
    if method not in ("vlc", "zooter", "routerdc", "cosinecls"):
        raise ValueError(f"unknown end-to-end method {method!r}; expected vlc, zooter, "
                         "routerdc or cosinecls.")
    q = np.asarray(quality, dtype=float)
    c = np.broadcast_to(np.asarray(cost, dtype=float), q.shape)
    out = np.zeros(q.shape)
    kept_targets, keep = soft_targets(q, c, label_lambda, cost_scale)
    out[keep] = kept_targets
    if method == "cosinecls" and math.isinf(label_lambda):
        correct = np.nan_to_num(q, nan=0.0)[keep] > 0
        out[keep] = correct / correct.sum(axis=1, keepdims=True)
    has = keep.copy()
    if method == "zooter":
        cheapest = np.argmin(np.nan_to_num(c, nan=np.inf), axis=1)
        for i in np.flatnonzero(~keep):
            out[i, cheapest[i]] = 1.0
        has[:] = True
    return out, has


def label_clusters(targets: FloatArray, has: np.ndarray, seed: int) -> np.ndarray:
    """KMeans (k = 5, fewer when the label vectors are fewer) cluster of each labelled row;
    -1 for the others."""
    from sklearn.cluster import KMeans

    out = np.full(len(targets), -1, dtype=np.int64)
    rows = np.flatnonzero(has)
    distinct = len(np.unique(np.round(targets[rows], 6), axis=0)) if len(rows) else 0
    k = min(N_CLUSTERS, distinct)
    if k >= 2:
        out[rows] = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(
            targets[rows])
    elif len(rows):
        out[rows] = 0
    return out


def _policy_loss(torch: Any, method: str, logits: Any, targets: Any, clusters: Any) -> Any:
    """The method's loss on rows that have targets."""
    F = torch.nn.functional
    logp = F.log_softmax(logits, dim=1)
    if method == "vlc":
        return -(targets * logp).sum(1).mean()
    if method == "zooter":
        return F.kl_div(logp, targets, reduction="batchmean")
    # RouterDC / CosineCls: request-to-model contrastive over the top label models ...
    k = min(TOP_POSITIVES, targets.shape[1])
    top = torch.topk(targets, k, dim=1).indices
    pos = torch.zeros_like(targets, dtype=torch.bool).scatter_(1, top, True) & (targets > 0)
    pos_lse = torch.logsumexp(logits.masked_fill(~pos, -1e9), dim=1)
    loss = (torch.logsumexp(logits, dim=1) - pos_lse).mean()
    # ... plus request-to-request InfoNCE, positives sharing a label cluster
    z = F.normalize(logits, dim=1)
    sim = z @ z.T / SS_TEMPERATURE
    n = len(z)
    eye = torch.eye(n, dtype=torch.bool)
    same = (clusters[:, None] == clusters[None, :]) & ~eye
    anchors = same.any(dim=1)
    if anchors.any():
        sim = sim.masked_fill(eye, -1e9)
        num = torch.logsumexp(sim.masked_fill(~same, -1e9), dim=1)
        den = torch.logsumexp(sim, dim=1)
        loss = loss + (den - num)[anchors].mean()
    return loss


class _E2E:
    """What the end-to-end routers share: token inputs, the network, its config."""

    #: the VL-RouterBench method whose head and loss the router uses ("ecvl" for ECVL)
    method: ClassVar[str] = "vlc"
    #: head geometry: "linear" (VLC, ZOOTER) or "cosine" (RouterDC, CosineCls)
    head: ClassVar[str] = "linear"
    #: the router reads a scenario token (ECVL)
    scenario_token: ClassVar[bool] = False
    #: the router reads token features (``vlroute features --tokens``), not a matrix
    needs_tokens: ClassVar[bool] = True
    label_lambda_grid: ClassVar[tuple[float, ...]] = CPU_LABEL_LAMBDAS

    learning_rate: float
    weight_decay: float
    d_model: int
    n_layers: int
    n_heads: int
    batch_size: int
    max_epochs: int
    patience: int
    random_state: int
    n_threads: int
    tune_text_layer: bool
    #: the fine-tuned text layer's shape (None: the text tokens are read as they are)
    text_layer_: dict[str, Any] | None = None
    #: the text states the router was fitted on ("last" or "penultimate"; None: before
    #: they were recorded)
    text_states_: str | None = None
    models_: tuple[str, ...]
    bounds_: tuple[float, float]
    dims_: dict[str, int]
    state_: Any
    _net: Any = None

    def _network_params(  # noqa: PLR0913 - one per constructor parameter
            self, learning_rate: float, weight_decay: float, d_model: int,
                        n_layers: int, n_heads: int, batch_size: int, max_epochs: int,
                        patience: int, random_state: int, n_threads: int,
                        tune_text_layer: bool) -> None:
        self.tune_text_layer = tune_text_layer
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.random_state = random_state
        self.n_threads = n_threads

    def _config(self) -> FusionConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads "
                             f"({self.n_heads}).")
        return FusionConfig(d_model=self.d_model, n_layers=self.n_layers,
                            n_heads=self.n_heads, learning_rate=self.learning_rate,
                            weight_decay=self.weight_decay, batch_size=self.batch_size,
                            max_epochs=self.max_epochs, patience=self.patience,
                            random_state=self.random_state, n_threads=self.n_threads)

    def _check_features(self, X: Any, n: int) -> None:
        name = type(self).__name__
        if X is None:
            raise ValueError(f"{name} needs request features X: token features; compute "
                             "them with `vlroute features DIR --tokens`.")
        if not isinstance(X, Tokens):
            raise ValueError(f"{name} reads token features (vlroute.tokens.Tokens, from "
                             "`vlroute features DIR --tokens`), got "
                             f"{type(X).__name__} of shape {getattr(X, 'shape', '?')}.")
        if len(X) != n:
            raise ValueError(f"token features have {len(X)} rows; expected {n}.")
        if hasattr(self, "dims_") and X.dims != self.dims_:
            raise ValueError(f"token features have dims {X.dims}; the router was fitted on "
                             f"{self.dims_}.")
        if self.text_states_ is not None and X.text_states != self.text_states_:
            what = ("fine-tuned the text tower's last layer and reads" if self.text_layer_
                    is not None else "was fitted on")
            raise ValueError(f"{name} {what} the text tower's {self.text_states_} states; "
                             f"these tokens hold its {X.text_states} states (`vlroute "
                             f"features DIR --tokens --text-states {self.text_states_}`).")

    def fit(self, train: RoutingMatrices, *, bounds: tuple[float, float],
            X: Any = None) -> Any:
        """Fit afresh: what an earlier fit recorded of its inputs does not bind this one."""
        for attr in ("dims_", "text_states_", "text_layer_"):
            self.__dict__.pop(attr, None)
        return super().fit(train, bounds=bounds, X=X)  # type: ignore[misc]

    def _new_net(self) -> Any:
        return build_net(self.dims_, len(self.models_), self._config(), head=self.head,
                         scenario=self.scenario_token, text_layer=self.text_layer_)

    def _start_net(self, torch: Any, X: Tokens) -> Any:
        """A fresh network for a fit; with ``tune_text_layer``, its text layer starts as
        the tower's last layer (the tokens must be the penultimate states)."""
        self.text_layer_ = None
        self.text_states_ = X.text_states
        weights = None
        if self.tune_text_layer:
            name = type(self).__name__
            if X.text_states != "penultimate":
                raise ValueError(
                    f"{name}: tune_text_layer fine-tunes the text tower's last layer on its "
                    f"input, but these tokens hold the tower's {X.text_states} states; store "
                    "penultimate states with `vlroute features DIR --tokens --text-states "
                    "penultimate`.")
            if not X.text_tower:
                raise ValueError(
                    f"{name}: tune_text_layer needs the name of the text tower the tokens "
                    "came from (to start its last layer from), and these tokens carry none; "
                    "recompute them with `vlroute features DIR --tokens --text-states "
                    "penultimate`.")
            from vlroute.towers import last_text_layer

            shape, weights = last_text_layer(X.text_tower)
            if shape["dim"] != X.dims["text_dim"]:
                raise ValueError(f"{name}: the tower {X.text_tower!r} has width "
                                 f"{shape['dim']}; the text tokens {X.dims['text_dim']}.")
            self.text_layer_ = shape
        net = self._new_net()
        if weights is not None:
            net.text_layer.load_state_dict({k: torch.from_numpy(v)
                                            for k, v in weights.items()})
        return net

    def _network(self) -> Any:
        if self._net is None:
            if not hasattr(self, "state_"):
                raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first.")
            with torch_threads(self.n_threads):
                self._net = import_state(self._new_net(), self.state_)
        return self._net

    def _holdout_score(self, quality: FloatArray, cost: FloatArray
                       ) -> Any:
        """Rank Score of argmax decisions on hold-out rows (the early-stopping score)."""
        low, high = self.bounds_

        def score(choices: IntArray) -> float:
            idx = np.arange(len(choices))
            acc = float(np.mean(np.nan_to_num(quality[idx, choices], nan=0.0)))
            spent = float(np.nanmean(cost[idx, choices]))
            return rank_score(acc, spent if math.isfinite(spent) else high,
                              c_min=low, c_max=high)
        return score


# -- policy mode ---------------------------------------------------------------------------
class _E2EPolicy(_E2E, PolicyRouter):
    """VL-RouterBench's end-to-end router: argmax of the head's scores."""

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {**NETWORK, **LABELS}
    default_learning_rate: ClassVar[float] = 5e-5
    label_lambda: float

    def __init__(self, *, label_lambda: float = 100.0,  # noqa: PLR0913 - sklearn-style
                 cost_scale: float = 100.0, learning_rate: float | None = None,
                 weight_decay: float = 0.01, d_model: int = 128, n_layers: int = 2,
                 n_heads: int = 4, batch_size: int = 16, max_epochs: int = 5,
                 patience: int = 2, random_state: int = 0, n_threads: int = 1,
                 tune_text_layer: bool = False) -> None:
        self.label_lambda = label_lambda
        self.cost_scale = cost_scale
        self._network_params(self.default_learning_rate if learning_rate is None
                             else learning_rate, weight_decay, d_model, n_layers, n_heads,
                             batch_size, max_epochs, patience, random_state, n_threads,
                             tune_text_layer)

    def _fit(self, train: RoutingMatrices, X: Any) -> None:
        self.dims_ = X.dims
        self._net = None
        holdout = self._holdout(train)
        targets, has = label_targets(self.method, train.quality, train.cost,
                                     float(self.label_lambda), self.cost_scale)
        clusters = label_clusters(targets, has, self.random_state)
        fit_rows = np.flatnonzero(~holdout & has)
        val_rows = np.flatnonzero(holdout)
        if not len(fit_rows):
            raise ValueError(f"{type(self).__name__}: no training request has a label (no "
                             "model solves any of them).")
        score = self._holdout_score(train.quality[val_rows], train.cost[val_rows])
        with torch_threads(self.n_threads) as torch:
            torch.manual_seed(self.random_state)
            net = self._start_net(torch, X)
            T, C = torch.from_numpy(targets.astype(np.float32)), torch.from_numpy(clusters)

            def loss(net: Any, tensors: tuple[Any, ...], rows: np.ndarray) -> Any:
                logits = net.policy_logits(net.embed(*tensors))
                idx = torch.from_numpy(rows)
                return _policy_loss(torch, self.method, logits, T[idx], C[idx])

            def holdout_score(net: Any) -> float:
                logits = predict_in_batches(net, X[val_rows], lambda n, t, _r:
                                            n.policy_logits(n.embed(*t)))
                return float(score(np.argmax(logits, axis=1)))

            self.history_ = train_fusion(net, X, fit_rows, loss,
                                         holdout_score if len(val_rows) else None,
                                         self._config(),
                                         val_rows=np.flatnonzero(holdout & has))
        self._net = net
        self.state_ = export_state(net)
        self.n_features_in_ = int(X.shape[1])

    def _fit_policy(self, X: FloatArray, quality: FloatArray, cost: FloatArray,
                    holdout: np.ndarray) -> Any:
        raise NotImplementedError  # _fit above trains the network directly

    def _policy(self, state: Any, X: Any) -> FloatArray:
        net = self._network()
        with torch_threads(self.n_threads):
            return predict_in_batches(net, X, lambda n, t, _r: n.policy_logits(n.embed(*t)))


class VLCRouter(_E2EPolicy):
    """VLC: fusion transformer, dropout 0.1, linear head, soft cross-entropy (lr 5e-5)."""

    method = "vlc"


class ZooterRouter(_E2EPolicy):
    """ZOOTER: VLC's classifier with a KL-divergence loss, unsolved requests kept (lr 1e-5)."""

    method = "zooter"
    default_learning_rate = 1e-5


class RouterDCRouter(_E2EPolicy):
    """RouterDC: cosine head over learned model embeddings, dual contrastive loss."""

    method = "routerdc"
    head = "cosine"


class CosineClsRouter(_E2EPolicy):
    """CosineCls: RouterDC's head and loss; inf labels are uniform over the correct models."""

    method = "cosinecls"
    head = "cosine"


# -- quality mode --------------------------------------------------------------------------
def _allowed(router: QualityRouter, candidates: str, n_models: int) -> np.ndarray:
    allowed = np.ones(n_models, dtype=bool)
    if candidates == "pareto":
        allowed[:] = False
        allowed[pareto_frontier(router.mean_cost_["usd"].tolist(),
                                router.mean_quality_.tolist())] = True
    return allowed


def _quality_setup(router: Any, train: RoutingMatrices, X: Tokens) -> np.ndarray:
    """What every quality-mode end-to-end fit sets first; returns the hold-out mask."""
    router.dims_ = X.dims
    router._net = None
    router.allowed_ = _allowed(router, router.candidates, train.n_models)
    router.n_features_in_ = int(X.shape[1])
    q = train.quality
    finite = q[np.isfinite(q)]
    router.binary_ = bool(train.rates or np.isin(finite, (0.0, 1.0)).all())
    router._quality_train = q
    router._holdout_train = router._holdout(train)
    router._by_mes = {}
    holdout: np.ndarray = router._holdout_train
    return holdout


def _bce(torch: Any, logits: Any, labels: Any) -> Any:
    mask = torch.isfinite(labels)
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.nan_to_num(labels), reduction="none") * mask
    return per.sum() / mask.sum().clamp(min=1)


def _sigmoid(z: FloatArray) -> FloatArray:
    with np.errstate(over="ignore"):
        out: FloatArray = 1.0 / (1.0 + np.exp(-z))
    return out


class _E2EQuality(_E2E, QualityRouter):
    """Quality-mode variant: sigmoid heads predicting each model's P(correct), trained with
    binary cross-entropy plus the method's own loss at ``label_lambda``."""

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **NETWORK, **LABELS, "candidates": CANDIDATES}
    default_learning_rate: ClassVar[float] = 5e-5

    def __init__(self, *, label_lambda: float = 0.0,  # noqa: PLR0913 - sklearn-style
                 cost_scale: float = 100.0, learning_rate: float | None = None,
                 weight_decay: float = 0.01, d_model: int = 128, n_layers: int = 2,
                 n_heads: int = 4, batch_size: int = 16, max_epochs: int = 5,
                 patience: int = 2, random_state: int = 0, n_threads: int = 1,
                 candidates: str = "all", tune_text_layer: bool = False) -> None:
        self.label_lambda = label_lambda
        self.cost_scale = cost_scale
        self.candidates = candidates
        self._network_params(self.default_learning_rate if learning_rate is None
                             else learning_rate, weight_decay, d_model, n_layers, n_heads,
                             batch_size, max_epochs, patience, random_state, n_threads,
                             tune_text_layer)

    def _fit(self, train: RoutingMatrices, X: Any) -> None:
        holdout = _quality_setup(self, train, X)
        q = np.clip(train.quality, 0.0, 1.0)
        targets, has = label_targets(self.method, train.quality, train.cost,
                                     float(self.label_lambda), self.cost_scale)
        clusters = label_clusters(targets, has, self.random_state)
        fit_rows, val_rows = np.flatnonzero(~holdout), np.flatnonzero(holdout)
        score = self._holdout_score(train.quality[val_rows], train.cost[val_rows])
        with torch_threads(self.n_threads) as torch:
            torch.manual_seed(self.random_state)
            net = self._start_net(torch, X)
            T, C = torch.from_numpy(targets.astype(np.float32)), torch.from_numpy(clusters)
            Q, H = torch.from_numpy(q.astype(np.float32)), torch.from_numpy(has)

            def loss(net: Any, tensors: tuple[Any, ...], rows: np.ndarray) -> Any:
                z = net.embed(*tensors)
                idx = torch.from_numpy(rows)
                total = _bce(torch, net.quality_logits(z), Q[idx])
                keep = H[idx]
                if keep.sum() >= 2:
                    total = total + _policy_loss(torch, self.method,
                                                 net.policy_logits(z)[keep], T[idx][keep],
                                                 C[idx][keep])
                return total

            def holdout_score(net: Any) -> float:
                logits = predict_in_batches(net, X[val_rows], lambda n, t, _r:
                                            n.quality_logits(n.embed(*t)))
                return float(score(np.argmax(logits, axis=1)))

            self.history_ = train_fusion(net, X, fit_rows, loss,
                                         holdout_score if len(val_rows) else None,
                                         self._config(), val_rows=val_rows)
            self._net = net
            self.state_ = export_state(net)
            # the frozen request embeddings of the train split: graded P(solved) refits
            self._X_train = predict_in_batches(net, X, lambda n, t, _r: n.embed(*t))

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        """Per-model logistic regressions on request embeddings (graded P(solved))."""
        from sklearn.linear_model import LogisticRegression

        coef = np.zeros((quality.shape[1], X.shape[1]))
        intercept = np.zeros(quality.shape[1])
        for k in range(quality.shape[1]):
            rows = np.isfinite(quality[:, k])
            y = quality[rows, k]
            if len(np.unique(y)) < 2:
                p = float(np.clip(y.mean() if len(y) else 0.5, 1e-4, 1 - 1e-4))
                intercept[k] = math.log(p / (1 - p))
            else:
                fitted = LogisticRegression(C=1.0, max_iter=2000).fit(X[rows], y)
                coef[k], intercept[k] = fitted.coef_[0], fitted.intercept_[0]
        return {"coef": coef, "intercept": intercept}

    def _embed(self, X: Any) -> FloatArray:
        net = self._network()
        with torch_threads(self.n_threads):
            return predict_in_batches(net, X, lambda n, t, _r: n.embed(*t))

    def _predict(self, state: Any, X: Any) -> FloatArray:
        net = self._network()
        with torch_threads(self.n_threads):
            logits = predict_in_batches(net, X, lambda n, t, _r: n.quality_logits(n.embed(*t)))
        return _sigmoid(logits)

    def predict_solved(self, X: Any, mes: float, tasks: np.ndarray | None = None
                       ) -> FloatArray:
        """P(10 q >= mes): the sigmoid heads on binary labels; on graded labels per-model
        logistic regressions on the request embeddings (fitted on the train split's)."""
        if self.binary_:
            return self.predict_quality(X, tasks)
        self._check_features(X, len(X))
        if mes not in self._by_mes:
            labels = solved(self._quality_train, mes)
            self._by_mes[mes] = self._fit_estimator(self._X_train, labels)
        state = self._by_mes[mes]
        return _sigmoid(self._embed(X) @ state["coef"].T + state["intercept"])


class VLCQualityRouter(_E2EQuality):
    """VLC's network with sigmoid P(correct) heads (quality mode)."""

    method = "vlc"


class ZooterQualityRouter(_E2EQuality):
    """ZOOTER's network with sigmoid P(correct) heads (quality mode; lr 1e-5)."""

    method = "zooter"
    default_learning_rate = 1e-5


class RouterDCQualityRouter(_E2EQuality):
    """RouterDC's network with sigmoid P(correct) heads (quality mode)."""

    method = "routerdc"
    head = "cosine"


class CosineClsQualityRouter(_E2EQuality):
    """CosineCls's network with sigmoid P(correct) heads (quality mode)."""

    method = "cosinecls"
    head = "cosine"


# -- ECVL ----------------------------------------------------------------------------------
class ECVLRouter(_E2E, QualityRouter):
    """ECVL-Router's scenario-conditioned transformer: image, text and scenario tokens, one
    head per model giving P(10 q >= MES).

    Parameters
    ----------
    pair : str
        ``"auto"`` (the cheapest edge-tier model and the most accurate cloud-tier model on
        train), ``"EDGE,CLOUD"`` model ids, or ``"none"`` (no stage 2).
    stage2_epochs : int
        Fine-tuning epochs on the pair (stage 2).
    learning_rate, weight_decay, d_model, n_layers, n_heads, batch_size, max_epochs,
    patience, random_state, n_threads : the network and its training (see the module).
    tune_text_layer : bool
        Fine-tune the text tower's last layer (on tokens stored with ``--text-states
        penultimate``) with the fusion network.
    candidates : {"all", "pareto"}
        Models a decision may choose.
    """

    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **NETWORK, "candidates": CANDIDATES, "pair": Name(),
        "stage2_epochs": Interval(int, 0)}
    method = "ecvl"
    scenario_token = True

    def __init__(self, *, pair: str = "auto",  # noqa: PLR0913 - sklearn-style
                 stage2_epochs: int = 2, learning_rate: float = 5e-5,
                 weight_decay: float = 0.01, d_model: int = 128, n_layers: int = 2,
                 n_heads: int = 4, batch_size: int = 16, max_epochs: int = 5,
                 patience: int = 2, random_state: int = 0, n_threads: int = 1,
                 candidates: str = "all", tune_text_layer: bool = False) -> None:
        self.pair = pair
        self.stage2_epochs = stage2_epochs
        self.candidates = candidates
        self._network_params(learning_rate, weight_decay, d_model, n_layers, n_heads,
                             batch_size, max_epochs, patience, random_state, n_threads,
                             tune_text_layer)

    def _pair_columns(self, train: RoutingMatrices) -> list[int]:
        if self.pair == "none":
            return []
        if self.pair != "auto":
            names = [p.strip() for p in self.pair.split(",")]
            unknown = [p for p in names if p not in train.models]
            if len(names) != 2 or unknown:
                raise ValueError(f"ECVLRouter: pair must be 'auto', 'none' or 'EDGE,CLOUD' "
                                 f"model ids among {list(train.models)}, got {self.pair!r}.")
            return [train.models.index(n) for n in names]
        edge = [k for k, t in enumerate(train.tiers) if t == "edge"]
        cloud = [k for k, t in enumerate(train.tiers) if t != "edge"]
        if not edge or not cloud:
            return []
        cost, acc = self.mean_cost_["usd"], np.nan_to_num(self.mean_quality_, nan=-1.0)
        return [min(edge, key=lambda k: cost[k]), max(cloud, key=lambda k: acc[k])]

    def _fit(self, train: RoutingMatrices, X: Any) -> None:
        holdout = _quality_setup(self, train, X)
        self._X_train = np.zeros((0, self.d_model))
        q = train.quality
        if self.binary_:
            grid = np.array([10.0])
        else:
            seen = np.unique(np.round(10.0 * q[np.isfinite(q)], 6))
            seen = seen[seen > 0]
            grid = seen if 0 < len(seen) <= 11 else np.arange(1.0, 11.0)
        self.mes_grid_ = grid.astype(float)
        self.pair_ = self._pair_columns(train)
        fit_rows, val_rows = np.flatnonzero(~holdout), np.flatnonzero(holdout)
        score = self._holdout_score(q[val_rows], train.cost[val_rows])
        rng = np.random.default_rng(self.random_state)
        with torch_threads(self.n_threads) as torch:
            torch.manual_seed(self.random_state)
            net = self._start_net(torch, X)
            Q = torch.from_numpy(np.asarray(q, dtype=np.float32))

            def loss_on(columns: list[int] | None) -> Any:
                def loss(net: Any, tensors: tuple[Any, ...], rows: np.ndarray) -> Any:
                    mes = rng.choice(self.mes_grid_, size=len(rows))
                    by = rng.integers(0, len(COST_DIMS), size=len(rows))
                    labels = Q[torch.from_numpy(rows)]
                    solved = torch.where(torch.isnan(labels), labels, (
                        10.0 * labels >= torch.from_numpy(mes[:, None] - 1e-6).float()
                    ).float())
                    logits = net.quality_logits(net.embed(*tensors, *self._token(
                        torch, mes, by)))
                    if columns:
                        logits, solved = logits[:, columns], solved[:, columns]
                    return _bce(torch, logits, solved)
                return loss

            def holdout_score(net: Any) -> float:
                preds = self._expected(net, X[val_rows], "usd")
                return float(score(np.argmax(preds, axis=1)))

            use = holdout_score if len(val_rows) else None
            history = {"stage1": train_fusion(net, X, fit_rows, loss_on(None), use,
                                              self._config(), val_rows=val_rows)}
            if self.pair_ and self.stage2_epochs:
                history["stage2"] = train_fusion(net, X, fit_rows, loss_on(self.pair_), use,
                                                 self._config(), val_rows=val_rows,
                                                 epochs=self.stage2_epochs)
            self.history_ = history
            self._net = net
            self.state_ = export_state(net)

    def _token(self, torch: Any, mes: np.ndarray, by: np.ndarray) -> tuple[Any, Any]:
        """The scenario token's inputs: (MES / 10, MES given) and the cost dimension."""
        given = 0.0 if self.binary_ else 1.0
        m = np.stack([np.asarray(mes, float) / 10.0 * given,
                      np.full(len(mes), given)], axis=1)
        return (torch.from_numpy(m.astype(np.float32)),
                torch.from_numpy(np.asarray(by, dtype=np.int64)))

    def _solved(self, net: Any, X: Any, mes: float, by: str) -> FloatArray:
        import torch

        k = COST_DIMS.index(by)

        def head(n: Any, t: tuple[Any, ...], rows: np.ndarray) -> Any:
            token = self._token(torch, np.full(len(rows), mes), np.full(len(rows), k))
            return n.quality_logits(n.embed(*t, *token))

        with torch_threads(self.n_threads):
            return _sigmoid(predict_in_batches(net, X, head))

    def _expected(self, net: Any, X: Any, by: str) -> FloatArray:
        """Expected quality: P(solved) on binary labels; on graded ones the sum over the MES
        grid of P(10 q >= g_i) (g_i - g_{i-1}) / 10."""
        if self.binary_:
            return self._solved(net, X, 10.0, by)
        grid = self.mes_grid_
        steps = np.diff(np.concatenate([[0.0], grid])) / 10.0
        out = np.zeros((len(X), len(self.models_)))
        for g, w in zip(grid, steps, strict=True):
            out += w * self._solved(net, X, float(g), by)
        return out

    def _fit_estimator(self, X: FloatArray, quality: FloatArray) -> Any:
        raise NotImplementedError  # _fit trains the network directly

    def _predict(self, state: Any, X: Any) -> FloatArray:
        return self._expected(self._network(), X, "usd")

    def predict_quality(self, X: Any, tasks: np.ndarray | None = None,
                        by: str = "usd") -> FloatArray:
        """(n, n_models) expected quality (the scenario token carries ``by``)."""
        if not hasattr(self, "state_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first.")
        self._check_features(X, len(X))
        return np.clip(self._expected(self._network(), X, by), 0.0, 1.0)

    def predict_solved(self, X: Any, mes: float, tasks: np.ndarray | None = None,
                       by: str = "usd") -> FloatArray:
        """(n, n_models) P(10 q >= mes) from the scenario token (mes, by)."""
        if not hasattr(self, "state_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first.")
        self._check_features(X, len(X))
        return self._solved(self._network(), X, float(mes), by)

    def predictions_for(self, X: Any, scenario: Scenario,
                        tasks: np.ndarray | None = None) -> FloatArray:
        """Expected quality (utility) or P(solved) at the scenario's MES and cost dimension
        (threshold)."""
        if scenario.family == "utility":
            return self.predict_quality(X, tasks, by=scenario.by)
        return self.predict_solved(X, scenario.solved_mes, tasks, by=scenario.by)


