"""Router artifacts: a folder with ``router.json`` (name, parameters, fitted values, feature
spec, versions) and ``arrays.npz`` (``allow_pickle=False``). Never pickle: loading an artifact
runs no code from it.
"""

from __future__ import annotations

import inspect
import json
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
    return {p: getattr(router, p) for p in names if hasattr(router, p)}


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
                info: dict[str, Any] | None = None, overwrite: bool = False) -> None:
    """Write a fitted router to the folder ``path`` atomically."""
    arrays: dict[str, np.ndarray] = {}
    fitted = {k: v for k, v in vars(router).items()
              if k.endswith("_") and not k.startswith("_") and k != "state_"}
    doc: dict[str, Any] = {"format": FORMAT, "vlroute_version": __version__,
                           "router": _name_of(router), "params": _params(router),
                           "feature_spec": feature_spec or {}, "info": info or {},
                           "fitted": _split(fitted, "fitted", arrays)}
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


def artifact_metadata(path: Path) -> dict[str, Any]:
    """The JSON part of an artifact (router name, params, feature spec, info), unvalidated
    beyond its format."""
    try:
        doc: dict[str, Any] = json.loads((Path(path) / "router.json").read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise IncompatibleArtifactError(f"{path}: not a readable router artifact ({exc}).") \
            from exc
    if doc.get("format") != FORMAT:
        raise IncompatibleArtifactError(f"{path}: format {doc.get('format')!r}; expected "
                                        f"{FORMAT!r}.")
    return {k: v for k, v in doc.items() if k not in ("fitted", "state", "state_arrays")}


def load_router(path: Path, *, feature_spec: dict[str, Any] | None = None) -> BaseRouter:
    """A fitted router from ``path``; with ``feature_spec``, refuse an artifact trained on
    other features (encoders, fusion or width)."""
    path = Path(path)
    try:
        doc = json.loads((path / "router.json").read_text("utf-8"))
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, json.JSONDecodeError, ValueError) as exc:
        raise IncompatibleArtifactError(f"{path}: not a readable router artifact ({exc}).") \
            from exc
    if doc.get("format") != FORMAT:
        raise IncompatibleArtifactError(f"{path}: format {doc.get('format')!r}; expected "
                                        f"{FORMAT!r}.")
    if feature_spec is not None and doc["feature_spec"] != feature_spec:
        raise IncompatibleArtifactError(
            f"{path}: trained on features {doc['feature_spec']}, asked to serve "
            f"{feature_spec}; retrain the router or use the same encoders and fusion.")
    router = make_router(doc["router"], **doc["params"])
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
