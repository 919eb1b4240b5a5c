"""The edge runtime: a serving bundle's encoders as ONNX graphs on onnxruntime, so that the
gateway and ``vlroute route`` run from ``pip install 'vlroute[edge]'`` without torch.

``vlroute export onnx BUNDLE`` (:func:`export_onnx`, which needs torch) writes into the
bundle folder ``text_encoder.onnx`` + ``text_tokenizer.json`` (MiniLM) and
``image_encoder.onnx`` (EfficientNet-Lite0), optionally their int8 variants, and then
``onnx.json``, the manifest that names them (written last, so it never names a file that is
not whole). The routers stay as they are: every router but the end-to-end ones predicts with
numpy (kNN, linear, MLP, matrix factorisation, IRT, priors, stacking, policy routers) or
LightGBM (``gbdt``), so they need no torch to serve; the end-to-end routers read token
features through a torch transformer and are refused, with the reason.

``router.runtime`` in the gateway config picks the runtime: ``onnx``, ``torch``, or
``auto`` (onnx when the bundle carries graphs for the configured encoders).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vlroute._io import write_json_atomic
from vlroute.errors import VlrouteError
from vlroute.features.base import Encoder
from vlroute.routers import E2E
from vlroute.routers.persistence import IncompatibleArtifactError, artifact_metadata
from vlroute.serve.config import Backend, ConfigError, GatewayConfig, RouterSettings
from vlroute.serve.requests import Prompt

MANIFEST = "onnx.json"
#: the router's graph, where it has one (see :mod:`vlroute.routers.onnx_graph`)
ROUTER_GRAPH = "router.onnx"
FORMAT = "vlroute-onnx/1"
#: the encoder ids the export knows how to write, by kind: (registry name, encoder id)
EXPORTABLE = {"text": ("minilm", "st:all-MiniLM-L6-v2@gt-0.1.0"),
              "image": ("efficientnet-lite0", "efficientnet-lite0@57934424")}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_exportable(artifact: Path, doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc.get("feature_spec") or {}
    if spec.get("kind") == "tokens" or doc.get("router") in E2E:
        raise IncompatibleArtifactError(
            f"{artifact}: {doc.get('router')!r} is an end-to-end router (token features "
            "through a torch transformer); it has no ONNX export: serve it with runtime: "
            "torch.")
    if not isinstance(doc.get("bundle"), dict):
        raise IncompatibleArtifactError(
            f"{artifact}: a router artifact without a serving bundle; write one with "
            "`vlroute train` or `vlroute demo`.")
    for kind, (name, encoder_id) in EXPORTABLE.items():
        have = spec.get(kind)
        if have is not None and have != encoder_id:
            raise IncompatibleArtifactError(
                f"{artifact}: its {kind} features come from {have!r}; `vlroute export onnx` "
                f"exports {name} ({encoder_id}) only.")
    if not any(spec.get(kind) for kind in EXPORTABLE):
        raise IncompatibleArtifactError(f"{artifact}: its feature spec names no text or image "
                                        "encoder; nothing to export.")
    return spec


def export_onnx(artifact: Path, *, quantize: str | None = None,
                calibration: Path | None = None) -> dict[str, Any]:
    """Export the bundle's encoders to ONNX into ``artifact`` and write its manifest;
    ``quantize="int8"`` adds the int8 variants, the image graph's calibrated on up to 100
    images of the folder ``calibration`` (default: the embedded demo set's). Returns the
    manifest."""
    from vlroute.features import onnx_export

    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be 'int8' or None, got {quantize!r}.")
    artifact = Path(artifact)
    doc = artifact_metadata(artifact)
    spec = _check_exportable(artifact, doc)
    entries: dict[str, dict[str, Any]] = {}
    if spec.get("text"):
        entries["text"] = onnx_export.export_text_encoder(artifact)
        if quantize:
            onnx_export.quantize_text_int8(artifact / "text_encoder.onnx",
                                           artifact / "text_encoder.int8.onnx")
            entries["text"]["files"]["int8"] = "text_encoder.int8.onnx"
    if spec.get("image"):
        entries["image"] = onnx_export.export_image_encoder(artifact)
        if quantize:
            images = onnx_export.calibration_images(calibration)
            onnx_export.quantize_image_int8(artifact / "image_encoder.onnx",
                                            artifact / "image_encoder.int8.onnx", images)
            entries["image"]["files"]["int8"] = "image_encoder.int8.onnx"
            entries["image"]["calibration"] = {
                "images": len(images), "folder": str(calibration) if calibration
                else "embedded demo set (DynaMath)", "method": "minmax, QDQ, per-channel"}
    for entry in entries.values():
        names = {*entry["files"].values(), *([entry["tokenizer"]] if "tokenizer" in entry
                                             else [])}
        entry["sha256"] = {n: _sha256(artifact / n) for n in sorted(names)}
    router = {"name": doc.get("router"),
              "predicts_with": "lightgbm" if doc.get("router") == "gbdt" else "numpy",
              **export_router_graph(artifact, spec)}
    if router["graph"]:
        router["sha256"] = {router["graph"]: _sha256(artifact / router["graph"])}
    manifest = {"format": FORMAT, "opset": onnx_export.OPSET, "encoders": entries,
                "variants": ["fp32", *(["int8"] if quantize else [])], "router": router}
    write_json_atomic(artifact / MANIFEST, manifest)
    return manifest


def export_router_graph(artifact: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Write ``router.onnx``, the bundle's router as a graph from fused features to
    predicted quality, for runtimes without Python (the gateway keeps predicting with numpy,
    so its decisions stay eval's to the bit); return the manifest's router entry."""
    from vlroute.routers.bundle import load_bundle
    from vlroute.routers.onnx_graph import write_router_graph

    try:
        bundle = load_bundle(artifact, feature_spec=spec)
    except VlrouteError as exc:
        return {"graph": None, "why": f"the bundle does not load ({exc})"}
    return write_router_graph(bundle.router, artifact / ROUTER_GRAPH)


def read_manifest(artifact: Path) -> dict[str, Any] | None:
    """The bundle's ONNX manifest, or None when it has none."""
    path = Path(artifact) / MANIFEST
    if not path.is_file():
        return None
    try:
        doc: Any = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable ONNX manifest ({exc}).") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or \
            not isinstance(doc.get("encoders"), dict):
        raise ConfigError(f"{path}: not an ONNX manifest of format {FORMAT!r}; export it "
                          "again with `vlroute export onnx`.")
    return doc


def _covers(manifest: dict[str, Any] | None, names: dict[str, str]) -> bool:
    return manifest is not None and all(
        (manifest["encoders"].get(kind) or {}).get("name") == name
        for kind, name in names.items())


def feature_encoders(settings: RouterSettings, artifact: Path
                     ) -> tuple[dict[str, Encoder], str]:
    """The configured encoders on the runtime ``settings.runtime`` chooses, and that
    runtime's name (``torch``, ``onnx-fp32`` or ``onnx-int8``). The onnx runtime imports
    no torch; it refuses a bundle without the graphs it needs, naming what is missing."""
    names = {kind: name for kind, name in (("text", settings.text_encoder),
                                           ("image", settings.image_encoder)) if name}
    manifest = read_manifest(artifact)
    runtime = settings.runtime
    if runtime == "auto":
        runtime = "onnx" if _covers(manifest, names) else "torch"
    if runtime == "torch":
        from vlroute.features.registry import make_encoder

        return {kind: make_encoder(name) for kind, name in names.items()}, "torch"
    if manifest is None:
        raise ConfigError(f"router.runtime is onnx, but {artifact} carries no ONNX graphs (no "
                          f"{MANIFEST}); run `vlroute export onnx {artifact}` (needs torch).")
    return {kind: _onnx_encoder(artifact, manifest, kind, name, settings)
            for kind, name in names.items()}, f"onnx-{settings.onnx_variant}"


def _onnx_encoder(artifact: Path, manifest: dict[str, Any], kind: str, name: str,
                  settings: RouterSettings) -> Encoder:
    from vlroute.features.onnx import exported_encoder

    entry = manifest["encoders"].get(kind) or {}
    if entry.get("name") != name:
        raise ConfigError(f"{artifact}: its ONNX export has {kind} encoder "
                          f"{entry.get('name')!r}, the config's {kind}_encoder is {name!r}.")
    file = (entry.get("files") or {}).get(settings.onnx_variant)
    if file is None:
        raise ConfigError(f"{artifact}: no {settings.onnx_variant} {kind} graph; run `vlroute "
                          f"export onnx {artifact} --quantize int8` or set "
                          "router.onnx_variant: fp32.")
    needed = [file, *([entry["tokenizer"]] if kind == "text" else [])]
    for part in needed:
        if not (artifact / part).is_file():
            raise ConfigError(f"{artifact / part}: named by {MANIFEST} but missing; export "
                              "again with `vlroute export onnx`.")
    return exported_encoder(artifact, kind, entry, settings.onnx_variant, settings.onnx_threads)


def route_config(artifact: Path, router: dict[str, Any] | None = None) -> GatewayConfig:
    """A gateway config for deciding with ``artifact`` alone (``vlroute route``): one
    backend per bundle candidate, never called, so that the decision goes through the
    gateway's own routing engine."""
    doc = artifact_metadata(Path(artifact))
    candidates = (doc.get("bundle") or {}).get("candidates") or []
    if not candidates:
        raise IncompatibleArtifactError(f"{artifact}: a router artifact without a serving "
                                        "bundle; write one with `vlroute train`.")
    backends = [Backend(name=m, base_url="http://127.0.0.1:9/v1", model=m, router_model=m)
                for m in candidates]
    return GatewayConfig(backends=backends, router=RouterSettings(
        artifact=Path(artifact), cache_size=0, **(router or {})))


def route_once(artifact: Path, prompt: Prompt, scenario: str = "auto",
               router: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's decision for one prompt, as the gateway makes it: the chosen model, the
    runtime, the scenario's spec and each model's prediction (quality or P(solved))."""
    from vlroute.serve.routing import RoutingEngine

    config = route_config(artifact, router)
    engine = RoutingEngine.from_config(config, Path(artifact), required=True)
    assert engine.bundle is not None
    chosen = engine.scenario(scenario)
    row = engine.router_rows([prompt], [chosen])[0]
    up = [b.name for b in config.backends if b.name not in engine.unfit(prompt)]
    decision = engine.decide(prompt, chosen, up, row=row)
    return {"model": decision.chosen, "runtime": engine.runtime,
            "scenario": engine.bundle.resolve(chosen).spec(),
            "predicted": {m: float(v) for m, v in zip(engine.bundle.models, row, strict=True)}}
