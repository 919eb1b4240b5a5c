"""Router artifacts: a folder with ``router.json`` (name, parameters, fitted values, feature
spec, versions) and ``arrays.npz`` (``allow_pickle=False``). Never pickle: loading an artifact
runs no code from it.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from vlroute import __version__
from vlroute._io import atomic_directory, atomic_path, write_json_atomic
from vlroute.errors import VlrouteError
from vlroute.routers import ROUTERS, BaseRouter, make_router
from vlroute.routers.base import LearnedRouter
from vlroute.routers.quality import QualityRouter

FORMAT = "vlroute-router/1"


class IncompatibleArtifactError(VlrouteError):
    """An artifact does not match what it is loaded for (format or feature spec)."""


def _name_of(router: BaseRouter) -> str:
    for name in ROUTERS:
        if ROUTERS.origin(name).endswith(f":{type(router).__name__}"):
            return name
    raise VlrouteError(f"{type(router).__name__} is not a registered router.")


def _params(router: BaseRouter) -> dict[str, Any]:
    names = [p for p in inspect.signature(type(router).__init__).parameters if p != "self"]
    return {p: _json_float(getattr(router, p)) for p in names if hasattr(router, p)}


def _json_float(value: Any) -> Any:
    """A non-finite float (label_lambda = inf) as JSON can hold it."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    return value


def _from_json_float(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__float__"}:
        return float(value["__float__"])
    return value


def _split(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """JSON-able form of a fitted value; arrays go to ``arrays`` under ``key``."""
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, dict):
        return {str(k): _split(v, f"{key}.{k}", arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _join(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict) and set(value) == {"__array__"}:
        return arrays[value["__array__"]]
    if isinstance(value, dict):
        return {k: _join(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, arrays) for v in value]
    return value


def save_router(router: BaseRouter, path: Path, *, feature_spec: dict[str, Any] | None = None,
                info: dict[str, Any] | None = None, overwrite: bool = False,
                bundle: dict[str, Any] | None = None) -> None:
    """Write a fitted router to the folder ``path`` atomically; ``bundle`` is its serving
    section (see :mod:`vlroute.routers.bundle`)."""
    arrays: dict[str, np.ndarray] = {}
    fitted = {k: v for k, v in vars(router).items()
              if k.endswith("_") and not k.startswith("_") and k != "state_"}
    doc: dict[str, Any] = {"format": FORMAT, "vlroute_version": __version__,
                           "router": _name_of(router), "params": _params(router),
                           "feature_spec": feature_spec or {}, "info": info or {},
                           "fitted": _split(fitted, "fitted", arrays)}
    if bundle is not None:
        doc["bundle"] = bundle
    if isinstance(router, LearnedRouter):
        meta, state_arrays = router.export_state(router.state_)
        doc["state"] = meta
        arrays.update({f"state.{k}": v for k, v in state_arrays.items()})
        doc["state_arrays"] = sorted(state_arrays)
    if isinstance(router, QualityRouter):                         # for P(solved) refits
        arrays["train.X"] = router._X_train.astype(np.float32)
        arrays["train.quality"] = router._quality_train
        arrays["train.holdout"] = router._holdout_train
    with atomic_directory(Path(path), overwrite=overwrite) as staging:
        write_json_atomic(staging / "router.json", doc)
        with atomic_path(staging / "arrays.npz") as tmp, tmp.open("wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]


def artifact_document(path: Path) -> dict[str, Any]:
    """The whole ``router.json`` of an artifact, checked for its format."""
    try:
        doc: Any = json.loads((Path(path) / "router.json").read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IncompatibleArtifactError(f"{path}: not a readable router artifact ({exc}).") \
            from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise IncompatibleArtifactError(f"{path}: format {found!r}; expected {FORMAT!r}.")
    return doc


def artifact_metadata(path: Path) -> dict[str, Any]:
    """The JSON part of an artifact (router name, params, feature spec, info, bundle),
    unvalidated beyond its format."""
    return {k: v for k, v in artifact_document(path).items()
            if k not in ("fitted", "state", "state_arrays")}


def load_router(path: Path, *, feature_spec: dict[str, Any] | None = None) -> BaseRouter:
    """A fitted router from ``path``; with ``feature_spec``, refuse an artifact trained on
    other features (encoders, fusion or width)."""
    path = Path(path)
    doc = artifact_document(path)
    try:
        with (path / "arrays.npz").open("rb") as handle, \
                np.load(handle, allow_pickle=False) as npz:   # closed even when damaged
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:      # OSError, BadZipFile, EOFError, ValueError, ...
        raise IncompatibleArtifactError(f"{path}: not a readable router artifact "
                                        f"({type(exc).__name__}: {exc}).") from exc
    if feature_spec is not None and doc.get("feature_spec") != feature_spec:
        raise IncompatibleArtifactError(
            f"{path}: trained on features {doc.get('feature_spec')}, asked to serve "
            f"{feature_spec}; retrain the router or use the same encoders and fusion.")
    try:
        return _rebuild(doc, arrays)
    except VlrouteError:
        raise
    except Exception as exc:     # a damaged artifact, whatever broke
        raise IncompatibleArtifactError(f"{path}: damaged router artifact "
                                        f"({type(exc).__name__}: {exc}).") from exc


def _rebuild(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> BaseRouter:
    router = make_router(doc["router"], **{k: _from_json_float(v)
                                           for k, v in doc["params"].items()})
    for key, value in _join(doc["fitted"], arrays).items():
        if key in ("models_", "tiers_"):
            value = tuple(value)
        setattr(router, key, value)
    if isinstance(router, LearnedRouter):
        state_arrays = {k: arrays[f"state.{k}"] for k in doc["state_arrays"]}
        router.state_ = router.import_state(doc["state"], state_arrays)
    if isinstance(router, QualityRouter):
        router._X_train = arrays["train.X"].astype(np.float64)
        router._quality_train = arrays["train.quality"]
        router._holdout_train = arrays["train.holdout"]
        router._by_mes = {}
    return router
