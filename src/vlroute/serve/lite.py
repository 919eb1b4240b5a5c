"""A bundle's decisions from its ONNX graphs alone, for a small device: numpy, Pillow,
onnxruntime and tokenizers are all it imports (no torch, pandas, pyarrow, scikit-learn,
LightGBM, pydantic, FastAPI), so it runs from

    pip install --no-deps vlroute && pip install numpy pillow onnxruntime tokenizers
    python -m vlroute.serve.lite BUNDLE --text "What is x?" --image q.png [--json]

The bundle must carry ``onnx.json`` with the encoders and ``router.onnx`` (``vlroute export
onnx BUNDLE``, which writes the graph for kNN, linear, MLP, IRT and task-prior routers). A
request goes the gateway's way: each encoder's output rounded to float32, the bundle's
fusion, the router graph's predicted quality, then the decision rule of
:meth:`vlroute.routers.quality.QualityRouter.decide` with the bundle's candidates, mean
costs and cost bounds (read from ``router.json`` and ``arrays.npz``), through the same
:meth:`vlroute.scenarios.Scenario.select`. The gateway predicts with numpy instead of the
graph; the two agree to about 1e-12 (``tests/test_edge.py`` checks the decisions are equal).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlroute.features.base import Item, MemoryImage
from vlroute.features.fusion import Fusion, fuse_outputs
from vlroute.features.onnx import exported_encoder, onnx_session
from vlroute.scenarios import AUTO, Scenario, parse_scenario


class LiteError(ValueError):
    """A bundle this runtime cannot decide with, or a request it cannot read."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LiteError(f"{path}: cannot be read ({exc}).") from None
    if not isinstance(doc, dict):
        raise LiteError(f"{path}: not a JSON object.")
    return doc


class LiteRouter:
    """One exported bundle's decisions, without the gateway's dependencies.

    Parameters
    ----------
    artifact : Path
        The bundle folder (``router.json``, ``arrays.npz``, ``onnx.json``, the graphs).
    variant : {"fp32", "int8"}
        The encoder graphs to run (the router graph is float64 either way).
    threads : int
        onnxruntime intra-op threads per graph.
    """

    def __init__(self, artifact: Path, variant: str = "fp32", threads: int = 1) -> None:
        self.artifact = artifact = Path(artifact)
        doc = _read_json(artifact / "router.json")
        manifest = _read_json(artifact / "onnx.json")
        section, fitted = doc.get("bundle"), doc.get("fitted") or {}
        graph = (manifest.get("router") or {}).get("graph")
        if not isinstance(section, dict):
            raise LiteError(f"{artifact}: no serving bundle in router.json.")
        if not graph:
            why = (manifest.get("router") or {}).get("why", "no router.onnx in onnx.json")
            raise LiteError(f"{artifact}: its router has no ONNX graph ({why}); serve it "
                            "with `vlroute serve` or `vlroute route`.")
        spec = doc.get("feature_spec") or {}
        self.models: tuple[str, ...] = tuple(fitted["models_"])
        self.candidates = tuple(section["candidates"])
        self.allowed = np.isin(np.array(self.models, dtype=object),
                               np.array(self.candidates, dtype=object))
        self.tiers = tuple(fitted.get("tiers_") or ())
        low, high = (float(b) for b in fitted["bounds_"])
        self.bounds = (low, high)
        self.binary = bool(fitted.get("binary_", False))
        costs = fitted.get("mean_cost_") or {}
        try:
            with np.load(artifact / "arrays.npz", allow_pickle=False) as arrays:
                self.mean_cost = {k: np.asarray(arrays[costs[k]["__array__"]], dtype=float)
                                  for k in ("usd", "latency", "energy")}
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise LiteError(f"{artifact}: the router's mean costs cannot be read from "
                            f"arrays.npz ({type(exc).__name__}: {exc}).") from None
        self.scenario = parse_scenario(section["scenario"]).with_params(
            name=section["scenario_name"])
        self.fusion = Fusion(spec.get("fusion", "normalize_concat"),
                             float(spec.get("text_weight", 0.5)))
        self.encoders: dict[str, Any] = {}
        for kind in ("text", "image"):
            if not spec.get(kind):
                continue
            entry = (manifest.get("encoders") or {}).get(kind) or {}
            file = (entry.get("files") or {}).get(variant)
            if file is None or entry.get("encoder_id") != spec[kind]:
                raise LiteError(f"{artifact}: no {variant} {kind} graph of "
                                f"{spec[kind]!r} in onnx.json; export it with `vlroute "
                                "export onnx` (--quantize int8 for int8).")
            self.encoders[kind] = exported_encoder(artifact, kind, entry, variant, threads)
        self.variant = variant
        self._graph = onnx_session(artifact / graph, threads)

    def predict(self, items: list[Item]) -> np.ndarray:
        """(n, n_models) predicted quality of each request."""
        X = fuse_outputs({kind: enc.encode_batch(items) for kind, enc in self.encoders.items()},
                         self.fusion.mode, self.fusion.text_weight)
        (quality,) = self._graph.run(None, {"features": np.ascontiguousarray(X)})
        return np.asarray(quality, dtype=np.float64)

    def resolve(self, name: str) -> Scenario:
        """``auto`` (the bundle's scenario), a preset or an inline spec."""
        if name.removeprefix("vlroute/") == AUTO:
            return self.scenario.with_params(name=AUTO)
        scenario = parse_scenario(name)
        if scenario.family != "utility" and not self.binary:
            raise LiteError(f"scenario {name!r} decides on P(solved), which this router "
                            "refits from graded labels: serve it with `vlroute serve`.")
        return scenario

    def decide(self, text: str, images: tuple[bytes, ...] = (), scenario: str = AUTO
               ) -> dict[str, Any]:
        """The chosen model for one request, the scenario's spec and each model's
        prediction."""
        chosen = self.resolve(scenario)
        quality = self.predict([Item(text, tuple(MemoryImage(d) for d in images))])
        masked = np.where(self.allowed, quality, -np.inf)
        choice = int(chosen.select(masked, self.mean_cost["usd"], self.mean_cost["latency"],
                                   self.mean_cost["energy"],
                                   bounds=self.bounds if chosen.by == "usd" else None,
                                   tiers=self.tiers)[0])
        return {"model": self.models[choice], "runtime": f"onnx-{self.variant}, lite",
                "scenario": chosen.spec(),
                "predicted": {m: float(v) for m, v in zip(self.models, quality[0],
                                                          strict=True)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlroute.serve.lite",
                                     description="Print the model an exported bundle chooses "
                                     "for one request, from its ONNX graphs alone.")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--text", default="")
    parser.add_argument("--image", action="append", default=[], type=Path)
    parser.add_argument("--scenario", default=AUTO)
    parser.add_argument("--variant", choices=("fp32", "int8"), default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.text and not args.image:
        parser.error("give the request: --text and/or --image.")
    try:
        images = tuple(p.read_bytes() for p in args.image)
        out = LiteRouter(args.bundle, args.variant, args.threads).decide(
            args.text, images, args.scenario)
    except (LiteError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out) if args.json else out["model"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
