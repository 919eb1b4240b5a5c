"""The ``jsonl`` reader: the shared data contract (samples / outcomes / models JSONL + set.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlroute._io import sha256_file
from vlroute.data.readers._checks import (
    field,
    iter_jsonl,
    read_json_object,
    relative_image_path,
    score_value,
)
from vlroute.data.tables import MEASURED_COLUMNS, MODALITIES, SourceTables
from vlroute.errors import ReaderError


def read_jsonl_set(src: Path, staging: Path) -> SourceTables:
    """Read a set folder in the shared contract (see the shared data README).

    Errors name the file, the line and what was expected: missing keys, wrong types, scores
    outside [0, 1], duplicate ids, outcomes of unknown samples or models, unsafe image paths.
    """
    src = Path(src)
    if not src.is_dir():
        raise ReaderError(src, None, "expected a set folder holding samples.jsonl, "
                                     "outcomes.jsonl and models.jsonl")
    files = {name: src / f"{name}.jsonl" for name in ("samples", "outcomes", "models")}
    for path in files.values():
        if not path.is_file():
            raise ReaderError(path, None, "missing; a jsonl set folder needs samples.jsonl, "
                                          "outcomes.jsonl and models.jsonl")
    info = _read_info(src / "set.json")
    models = _read_models(files["models"])
    samples = _read_samples(files["samples"])
    outcomes, unscored = _read_outcomes(files["outcomes"], set(samples["sample_id"]),
                                        set(models["model"]))
    sources = [{"path": p.name, "sha256": sha256_file(p)}
               for p in [*files.values(), src / "set.json"] if p.is_file()]
    report = [f"outcomes.jsonl: {unscored} unscored outcome(s) (score null: not judged yet, "
              "or a failed call) left out"] if unscored else []
    return SourceTables(name=str(info.get("name") or src.name), reader="jsonl", samples=samples,
                        outcomes=outcomes, models=models, info=info, image_root=src,
                        sources=sources, report=report)


def _read_info(path: Path) -> dict[str, Any]:
    return read_json_object(path, missing_ok=True)


def _read_models(path: Path) -> pd.DataFrame:
    rows, seen = [], set()
    for number, obj in iter_jsonl(path):
        where = f"line {number}"
        model = field(obj, "model", (str,), path=path, where=where)
        if model in seen:
            raise ReaderError(path, where, f"duplicate model {model!r}; model ids must be unique")
        seen.add(model)
        modality = field(obj, "modality", (str,), path=path, where=where,
                         default="vision-language")
        if modality not in MODALITIES:
            raise ReaderError(path, where, f"'modality' is {modality!r}; expected one of "
                                           f"{', '.join(MODALITIES)}")
        params = field(obj, "params_b", (int, float), path=path, where=where, nullable=True,
                       default=None)
        rows.append({
            "model": model,
            "display_name": field(obj, "display_name", (str,), path=path, where=where,
                                  default=model),
            "family": field(obj, "family", (str,), path=path, where=where, nullable=True,
                            default=None),
            "params_b": float(params) if params is not None else math.nan,
            "open_weights": field(obj, "open_weights", (bool,), path=path, where=where),
            "modality": modality,
            "notes": field(obj, "notes", (str,), path=path, where=where, nullable=True,
                           default=""),
        })
    if not rows:
        raise ReaderError(path, None, "no models; expected at least one JSON object")
    return pd.DataFrame(rows)


def _read_samples(path: Path) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, obj in iter_jsonl(path):
        where = f"line {number}"
        sid = field(obj, "sample_id", (str,), path=path, where=where)
        if sid in seen:
            raise ReaderError(path, where, f"duplicate sample_id {sid!r} (first on line "
                                           f"{seen[sid]}); sample ids must be unique")
        seen[sid] = number
        images = field(obj, "images", (list,), path=path, where=where, default=[])
        rows.append({
            "sample_id": sid,
            "dataset": field(obj, "dataset", (str,), path=path, where=where),
            "group": field(obj, "group", (str,), path=path, where=where),
            "task": field(obj, "task", (str,), path=path, where=where, nullable=True,
                          default=None),
            "question": field(obj, "question", (str,), path=path, where=where),
            "images": [relative_image_path(v, path=path, where=where) for v in images],
            "answer": _as_text(obj.get("answer")),
            "meta": json.dumps(field(obj, "meta", (dict,), path=path, where=where, default={}),
                               ensure_ascii=False),
        })
    if not rows:
        raise ReaderError(path, None, "no samples; expected at least one JSON object")
    return pd.DataFrame(rows)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _read_outcomes(path: Path, sample_ids: set[str], model_ids: set[str]
                   ) -> tuple[pd.DataFrame, int]:
    """The scored outcomes, and how many were unscored (``score: null``: collected but not
    judged yet, or a failed call); those are left out. Repeated (sample, model) pairs are
    kept: the build refuses them or collapses them (:mod:`vlroute.data.repeats`)."""
    cols: dict[str, list[Any]] = {k: [] for k in ("sample_id", "model", "score", "raw_score",
                                                  "response", "prediction", *MEASURED_COLUMNS)}
    unscored = 0
    for number, obj in iter_jsonl(path):
        where = f"line {number}"
        sid = field(obj, "sample_id", (str,), path=path, where=where)
        model = field(obj, "model", (str,), path=path, where=where)
        if sid not in sample_ids:
            raise ReaderError(path, where, f"unknown sample_id {sid!r}; every outcome must "
                                           "refer to a sample of samples.jsonl")
        if model not in model_ids:
            raise ReaderError(path, where, f"unknown model {model!r}; every outcome must refer "
                                           "to a model of models.jsonl")
        if "score" in obj and obj["score"] is None:
            unscored += 1
            continue
        cols["sample_id"].append(sid)
        cols["model"].append(model)
        cols["score"].append(score_value(obj, path=path, where=where))
        cols["raw_score"].append(json.dumps(obj.get("raw_score"), ensure_ascii=False))
        for key in ("response", "prediction"):
            cols[key].append(field(obj, key, (str,), path=path, where=where, nullable=True,
                                   default=None))
        for key in MEASURED_COLUMNS:
            value = field(obj, key, (int, float), path=path, where=where, nullable=True,
                          default=None)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ReaderError(path, where, f"{key!r} is {value}; expected a finite "
                                               "non-negative number")
            cols[key].append(np.nan if value is None else float(value))
    if not cols["sample_id"]:
        if unscored:
            raise ReaderError(path, None, f"all {unscored} outcomes are unscored (score "
                                          "null); score them first (`vlroute judge run`)")
        raise ReaderError(path, None, "no outcomes; expected at least one JSON object")
    return pd.DataFrame(cols), unscored
