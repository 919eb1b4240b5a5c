"""A fitted router as an ONNX graph (building it needs ``onnx``), for runtimes without Python.

The graph's input ``features`` (n, d) float64 is the fused feature rows the router reads (the
bundle's fusion of the encoders' outputs: for ``normalize_concat``, each encoder's vector
L2-normalised, then concatenated); its output ``quality`` (n, n_models) float64 is
:meth:`QualityRouter.predict_quality`: each model's predicted quality, clipped to [0, 1],
which utility scenarios decide on, and which is P(solved) on binary labels. The decision
rule (penalised quality over the bundle's candidates and mean costs) stays outside the graph.

Written for kNN (per sample or per group, weighted or not), the linear router, the MLP
router (and ``mf``), IRT, and the task-prior router (without the request's task hint, which
the graph cannot read). Other routers (GBDT, blends, stacks, calibrated, policy routers)
get no graph: :func:`router_graph` returns None. Everything is float64, the precision the
numpy routers compute in, so the graph's outputs equal theirs to about 1e-12 (kNN's
similarities are compared at 9 decimals, as :func:`vlroute.routers.quality.nearest` does,
so both pick the same neighbours).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vlroute._optional import require
from vlroute.routers.irt import IRTRouter
from vlroute.routers.mlp import MLPRouter
from vlroute.routers.priors import TaskPriorRouter
from vlroute.routers.quality import KNNRouter, LinearRouter, QualityRouter

#: the ONNX opset of the router graphs
OPSET = 17
INPUT, OUTPUT = "features", "quality"


class _Builder:
    """Nodes and float64 constants of one graph, named in order."""

    def __init__(self) -> None:
        self.onnx = require("onnx", extra="onnx-export")
        self.nodes: list[Any] = []
        self.constants: list[Any] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, value: Any, stem: str = "c", dtype: Any = np.float64) -> str:
        name = self.name(stem)
        self.constants.append(self.onnx.numpy_helper.from_array(
            np.ascontiguousarray(np.asarray(value, dtype=dtype)), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def standardise(self, x: str, mean: Any, scale: Any) -> str:
        return self.op("Div", self.op("Sub", x, self.const(mean, "mean")),
                       self.const(scale, "scale"))

    def sigmoid(self, x: str) -> str:
        # 1 / (1 + exp(-x)), as the routers compute it (not onnxruntime's Sigmoid kernel)
        one = self.const(1.0, "one")
        return self.op("Div", one, self.op("Add", one, self.op("Exp", self.op("Neg", x))))

    def model(self, output: str, n_features: int, n_models: int, doc: str) -> Any:
        helper, tensor = self.onnx.helper, self.onnx.TensorProto
        clipped = self.op("Clip", output, self.const(0.0, "lo"), self.const(1.0, "hi"))
        self.nodes.append(helper.make_node("Identity", [clipped], [OUTPUT]))
        graph = helper.make_graph(
            self.nodes, "vlroute_router",
            [helper.make_tensor_value_info(INPUT, tensor.DOUBLE, ["n", n_features])],
            [helper.make_tensor_value_info(OUTPUT, tensor.DOUBLE, ["n", n_models])],
            initializer=self.constants)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="vlroute", doc_string=doc)
        model.ir_version = 8            # onnxruntime 1.17 and later read it
        self.onnx.checker.check_model(model)
        return model


def _knn(b: _Builder, router: KNNRouter, state: Any) -> str:
    train, y = np.asarray(state["X"]), np.asarray(state["y"])
    k = min(router.n_neighbors, len(train))
    norms = b.op("Sqrt", b.op("ReduceSumSquare", INPUT, axes=[1], keepdims=1))
    zero = b.const(0.0, "zero")
    safe = b.op("Where", b.op("Greater", norms, zero), norms, b.const(1.0, "one"))
    unit = b.op("Div", INPUT, safe)                         # zero rows stay zero
    sims = b.op("MatMul", unit, b.const(train.T, "train_t"))             # (n, n_train)
    # compared at 9 decimals, ties to the lower train index (TopK's rule), as nearest()
    rounded = b.op("Round", b.op("Mul", sims, b.const(1e9, "scale9")))
    values, idx = b.name("topk_values"), b.name("topk_indices")
    b.nodes.append(b.onnx.helper.make_node("TopK", [rounded, b.const([k], "k", np.int64)],
                                           [values, idx], axis=1, largest=1, sorted=1))
    labels = b.op("Gather", b.const(np.nan_to_num(y), "labels"), idx, axis=0)  # (n, k, m)
    finite = b.op("Gather", b.const(np.isfinite(y).astype(float), "finite"), idx, axis=0)
    if router.weighted:
        w = b.op("Clip", b.op("GatherElements", sims, idx, axis=1), b.const(1e-6, "eps"))
        w = b.op("Unsqueeze", w, b.const([2], "axis2", np.int64))              # (n, k, 1)
        labels, finite = b.op("Mul", labels, w), b.op("Mul", finite, w)
    axis = b.const([1], "axis1", np.int64)
    total = b.op("ReduceSum", labels, axis, keepdims=0)
    count = b.op("ReduceSum", finite, axis, keepdims=0)
    return b.op("Div", total, b.op("Max", count, b.const(1e-12, "tiny")))


def _linear(b: _Builder, state: Any) -> str:
    z = b.standardise(INPUT, state["mean"], state["scale"])
    raw = b.op("Add", b.op("MatMul", z, b.const(np.asarray(state["coef"]).T, "coef_t")),
               b.const(state["intercept"], "intercept"))
    logistic = b.const(np.asarray(state["logistic"], dtype=bool), "logistic", np.bool_)
    return b.op("Where", logistic, b.sigmoid(raw), raw)


def _mlp(b: _Builder, router: MLPRouter, state: Any) -> str:
    h = b.standardise(INPUT, state["mean"], state["scale"])
    n_layers = sum(1 for key in state if str(key).startswith("W"))
    for i in range(n_layers):
        h = b.op("Add", b.op("MatMul", h, b.const(np.asarray(state[f"W{i}"]).T, f"W{i}_t")),
                 b.const(state[f"b{i}"], f"b{i}"))
        if i < n_layers - 1 and router.activation == "relu":
            h = b.op("Relu", h)
    return b.sigmoid(h)


def _irt(b: _Builder, state: Any) -> str:
    z = b.op("MatMul", b.standardise(INPUT, state["mean"], state["scale"]),
             b.const(state["proj"], "proj"))
    head = b.op("MatMul", z, b.const(np.asarray(state["A"]).T, "a_t"))          # (n, dims)
    wb = np.asarray(state["wb"], dtype=float).reshape(-1, 1)
    offset = b.op("Neg", b.op("Add", b.op("MatMul", z, b.const(wb, "wb")),
                              b.const(np.asarray(state["cb"], dtype=float).reshape(1, -1)
                                      [:, :1], "cb")))                          # (n, 1)
    logits = b.op("Add", b.op("Add", b.op("MatMul", head, b.const(
        np.asarray(state["theta"]).T, "theta_t")), b.const(state["beta"], "beta")), offset)
    return b.sigmoid(logits)


def _prior(b: _Builder, state: Any) -> str:
    prior = np.asarray(state["prior"], dtype=float)
    z = b.standardise(INPUT, state["mean"], state["scale"])
    logits = b.op("Add", b.op("MatMul", z, b.const(np.asarray(state["coef"]).T, "coef_t")),
                  b.const(state["intercept"], "intercept"))
    p = b.op("Softmax", logits, axis=1)
    rows = prior[np.asarray(state["classes"]).astype(np.int64)]
    return b.op("MatMul", p, b.const(rows, "prior"))


def router_graph(router: Any) -> Any | None:
    """The ONNX model of a fitted router's :meth:`predict_quality`, or None for a router
    without one (see the module docstring)."""
    if not isinstance(router, QualityRouter) or not hasattr(router, "state_"):
        return None
    state = router.state_
    b = _Builder()
    kind = type(router)
    if isinstance(router, KNNRouter) and kind is KNNRouter:
        out = _knn(b, router, state)
    elif kind is LinearRouter:
        out = _linear(b, state)
    elif isinstance(router, MLPRouter) and type(router)._predict is MLPRouter._predict:
        out = _mlp(b, router, state)
    elif kind is IRTRouter:
        out = _irt(b, state)
    elif kind is TaskPriorRouter and "coef" in state:
        out = _prior(b, state)
    else:
        return None
    return b.model(out, int(router.n_features_in_), len(router.models_),
                   f"vlroute {type(router).__name__}: predicted quality per model")


def graph_outputs(model: Any, X: np.ndarray) -> np.ndarray:
    """The graph's ``quality`` for feature rows ``X`` on onnxruntime (one thread);
    ``model``: an ONNX model or the path of its file."""
    ort = require("onnxruntime", extra="edge")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {INPUT: np.ascontiguousarray(X, dtype=np.float64)})
    return np.asarray(out)


#: the most a graph's output may differ from the numpy router's on the probe rows
TOLERANCE = 1e-9


def _probe_rows(router: QualityRouter, n: int = 64) -> np.ndarray:
    """Feature rows to check a graph on: noise, rows around the train split's mean (routers
    that standardise), train rows nudged (kNN) and a zero row (every similarity ties)."""
    rng = np.random.default_rng(0)
    d = int(router.n_features_in_)
    state = router.state_
    rows = [rng.normal(size=(n, d)), np.zeros((1, d))]
    if "mean" in state and "scale" in state:
        rows.append(state["mean"] + state["scale"] * rng.normal(size=(n, d)))
    if "X" in state:
        train = np.asarray(state["X"])[:n]
        rows += [train, train + 1e-3 * rng.normal(size=train.shape)]
    return np.vstack(rows)


def write_router_graph(router: Any, target: Any) -> dict[str, Any]:
    """Write ``router``'s graph to ``target`` (atomically) when it has one and the graph's
    outputs equal the numpy router's within :data:`TOLERANCE` on probe rows; return the
    manifest entry (``graph`` None, with ``why``, when nothing was written)."""
    from vlroute._io import atomic_path

    try:
        model = router_graph(router)
        if model is None:
            return {"graph": None, "why": f"no ONNX graph for {type(router).__name__}"}
        X = _probe_rows(router)
        diff = float(np.abs(graph_outputs(model, X) - router.predict_quality(X)).max())
    except (ImportError, MemoryError):
        raise
    except Exception as exc:    # an add-on to the encoders' export: say why, do not fail it
        return {"graph": None, "why": f"building the graph failed ({type(exc).__name__}: "
                f"{exc})"}
    if not diff <= TOLERANCE:
        return {"graph": None, "why": f"the graph's outputs differ from the router's by "
                f"{diff:.2e} on probe rows (tolerance {TOLERANCE:.0e})"}
    with atomic_path(Path(target)) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return {"graph": Path(target).name, "input": f"{INPUT}: (n, {router.n_features_in_}) "
            "float64, the bundle's fused feature rows", "output": f"{OUTPUT}: (n, "
            f"{len(router.models_)}) float64, predicted quality per model in [0, 1]",
            "models": list(router.models_), "opset": OPSET,
            "max_abs_diff_on_probe_rows": diff,
            **({"without_hints": list(router.hints)} if router.hints else {})}
