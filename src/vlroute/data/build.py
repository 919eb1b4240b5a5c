"""Build a bench directory from source tables: checks, splits, economics, atomic write."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vlroute import __version__
from vlroute._io import atomic_directory, sha256_file, write_json_atomic
from vlroute.costs import Catalog, estimate_pairs
from vlroute.costs.estimate import QUANTITIES, SampleInputs
from vlroute.data.bench import SCHEMA, TEXT_COLUMNS, Bench, load_bench
from vlroute.data.images import image_table
from vlroute.data.repeats import collapse_repeats
from vlroute.data.splits import SplitSpec, assign_splits, merge_groups
from vlroute.data.tables import MEASURED_COLUMNS, SourceTables
from vlroute.errors import DataError

Progress = Callable[[str], None]


def _codes(t: SourceTables) -> tuple[np.ndarray, np.ndarray]:
    """Row of each outcome's sample and model; unknown ids, repeated pairs and bad scores
    fail with the outcome's row."""
    sample_idx = pd.Categorical(t.outcomes["sample_id"],
                                categories=t.samples["sample_id"]).codes.astype(np.int64)
    model_idx = pd.Categorical(t.outcomes["model"],
                               categories=t.models["model"]).codes.astype(np.int64)
    for codes, column, what in ((sample_idx, "sample_id", "sample"), (model_idx, "model",
                                                                      "model")):
        if (codes < 0).any():
            row = int(np.flatnonzero(codes < 0)[0])
            raise DataError(f"{t.name}: outcome row {row} refers to unknown {what} "
                            f"{t.outcomes[column].iloc[row]!r}.")
    pair = sample_idx * len(t.models) + model_idx
    order = np.argsort(pair, kind="stable")
    repeated = np.flatnonzero(np.diff(pair[order]) == 0)
    if len(repeated):
        row = int(order[repeated[0] + 1])
        raise DataError(f"{t.name}: outcome row {row} repeats the pair "
                        f"({t.outcomes['sample_id'].iloc[row]!r}, "
                        f"{t.outcomes['model'].iloc[row]!r}); if these are repeated runs "
                        "of the model, build with `--repeats mean` (or \"repeats\": \"mean\" "
                        "in set.json) to learn their success rate.")
    scores = t.outcomes["score"].to_numpy(dtype=float)
    bad = ~((scores >= 0) & (scores <= 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{t.name}: outcome row {row} has score {scores[row]}; expected a "
                        "number in [0, 1].")
    return sample_idx, model_idx


def _check_ids(t: SourceTables) -> None:
    """Sample and model ids are unique."""
    dup = t.samples["sample_id"].duplicated()
    if dup.any():
        raise DataError(f"{t.name}: duplicate sample_id {t.samples['sample_id'][dup].iloc[0]!r}"
                        f" (samples row {int(np.flatnonzero(dup)[0])}); ids must be unique.")
    dup = t.models["model"].duplicated()
    if dup.any():
        raise DataError(f"{t.name}: duplicate model {t.models['model'][dup].iloc[0]!r}.")


def _official(samples: pd.DataFrame, info: dict[str, Any]) -> list[str | None] | None:
    if info.get("official_split") != "meta.split":
        return None
    return [json.loads(m).get("split") if m else None for m in samples["meta"]]


def _split_groups(samples: pd.DataFrame, images: pd.DataFrame) -> list[str]:
    # Two groups showing byte-identical images travel together: near-duplicates by picture.
    groups = samples["group"].astype(str).tolist()
    if images.empty:
        return groups
    by_hash = images.assign(group=np.asarray(groups, dtype=object)[images["sample_idx"]])
    links: list[tuple[str, str]] = []
    for _, members in by_hash.groupby("sha256")["group"]:
        uniq = sorted(set(members))
        links.extend((uniq[0], other) for other in uniq[1:])
    return merge_groups(groups, links)


def _economics(t: SourceTables, catalog: Catalog, models: pd.DataFrame,
               samples: pd.DataFrame, images: pd.DataFrame, sample_idx: np.ndarray,
               model_idx: np.ndarray) -> tuple[pd.DataFrame, dict[str, Any]]:
    econ = [catalog.economics(str(name), params_b=None if pd.isna(params) else float(params),
                              open_weights=bool(open_w))
            for name, params, open_w in zip(models["model"], models["params_b"],
                                            models["open_weights"], strict=True)]
    inputs = SampleInputs(
        text_chars=np.asarray(samples["question"].str.len(), dtype=np.float64),
        image_sample=images["sample_idx"].to_numpy(dtype=np.int64),
        image_w=images["width"].to_numpy(dtype=float),
        image_h=images["height"].to_numpy(dtype=float),
        image_bytes=images["bytes"].to_numpy(dtype=float),
    )
    response = t.outcomes["response"]
    response_chars: np.ndarray = (
        response.str.len().to_numpy(dtype=float, na_value=np.nan)
        if response.notna().any() else np.full(len(response), np.nan))
    measured = {q: t.outcomes[q].to_numpy(dtype=float) for q in MEASURED_COLUMNS
                if q in t.outcomes and t.outcomes[q].notna().any()}
    pairs = estimate_pairs(catalog, econ, inputs, sample_idx, model_idx, response_chars,
                           measured)
    columns: dict[str, Any] = {}
    for q in QUANTITIES:
        columns[q] = pairs.values[q]
        columns[f"{q}_estimated"] = pairs.estimated[q]
    models = models.assign(
        tier=[e.tier for e in econ], profile=[e.profile for e in econ],
        price_in=[e.price_in for e in econ], price_out=[e.price_out for e in econ],
        price_status=[e.price_status for e in econ], image_rule=[e.image_rule for e in econ],
        params_b=[np.nan if e.params_b is None else e.params_b for e in econ],
        economics_notes=["; ".join(e.notes) for e in econ])
    summary = {q: round(float(np.mean(pairs.estimated[q])), 6) for q in QUANTITIES}
    return models, {"columns": columns, "estimated_share": summary}


def build_bench(tables: SourceTables, out: Path, *, catalog: Catalog | None = None,
                split: SplitSpec | None = None, overwrite: bool = False,
                progress: Progress | None = None, repeats: str | None = None) -> Bench:
    """Check ``tables``, split, estimate economics and write a bench to ``out`` atomically.

    Nothing is left at ``out`` if any step fails; an existing bench is only replaced when
    ``overwrite`` is true, and only once the new one is complete. ``repeats`` ("error" or
    "mean"; default the set's ``repeats`` in set.json, else "error") says what several
    outcomes of one model on one sample become (see :mod:`vlroute.data.repeats`).
    """
    policy = repeats or str(tables.info.get("repeats", "error"))
    tables, done = collapse_repeats(tables, policy)
    tables = replace(tables, info={**tables.info, "repeats_collapsed": done})
    _build_into(tables, Path(out), catalog or Catalog.default(), split or SplitSpec(),
                overwrite, progress or (lambda _msg: None))
    return load_bench(out)


def _build_into(tables: SourceTables, out: Path, catalog: Catalog, split: SplitSpec,
                overwrite: bool, note: Progress) -> None:
    _check_ids(tables)
    sample_idx, model_idx = _codes(tables)
    with atomic_directory(Path(out), overwrite=overwrite) as staging:
        note("images")
        samples = tables.samples.reset_index(drop=True)
        images = image_table(samples, tables.image_root, staging)
        note("splits")
        samples = samples.assign(
            split_group=_split_groups(samples, images),
            text_chars=samples["question"].str.len(),
            n_images=samples["images"].map(len))
        samples["split"] = assign_splits(samples["split_group"].tolist(), split,
                                         datasets=samples["dataset"].tolist(),
                                         official=_official(samples, tables.info))
        note("economics")
        models = tables.models.reset_index(drop=True)
        models, econ = _economics(tables, catalog, models, samples, images, sample_idx,
                                  model_idx)
        records = _records_table(tables, samples, models, sample_idx, model_idx,
                                 econ["columns"])
        note("writing")
        frames = {"samples": samples, "images": images, "models": models, "records": records}
        _write(staging, tables, catalog, split, frames, econ["estimated_share"])


def _text_column(values: pd.Series) -> pa.Array:
    return pa.array(values.astype(object).where(values.notna(), None).tolist(), pa.string()) \
        if values.notna().any() else pa.nulls(len(values), pa.string())


def _records_table(t: SourceTables, samples: pd.DataFrame, models: pd.DataFrame,
                   sample_idx: np.ndarray, model_idx: np.ndarray,
                   economics: dict[str, np.ndarray]) -> pa.Table:
    """The records as an Arrow table built from numpy without a pandas copy (large benches)."""
    ids = pa.array(samples["sample_id"].astype(str).tolist(), pa.string())
    names = pa.array(models["model"].astype(str).tolist(), pa.string())
    columns: dict[str, pa.Array] = {
        "sample_idx": pa.array(sample_idx.astype(np.int32)),
        "model_idx": pa.array(model_idx.astype(np.int16)),
        "sample_id": pa.DictionaryArray.from_arrays(pa.array(sample_idx.astype(np.int32)), ids),
        "model": pa.DictionaryArray.from_arrays(pa.array(model_idx.astype(np.int32)), names),
        "score": pa.array(t.outcomes["score"].to_numpy(dtype=float)),
    }
    for name in TEXT_COLUMNS:
        columns[name] = _text_column(t.outcomes[name])
    columns.update({k: pa.array(v) for k, v in economics.items()})
    if "ttft_s" in t.outcomes and t.outcomes["ttft_s"].notna().any():   # measured only
        columns["ttft_s"] = pa.array(t.outcomes["ttft_s"].to_numpy(dtype=float))
    return pa.table(columns)


def _write(staging: Path, t: SourceTables, catalog: Catalog, split: SplitSpec,
           frames: dict[str, Any], estimated: dict[str, float]) -> None:
    files = {}
    samples = frames["samples"]
    for name, frame in frames.items():
        path = staging / f"{name}.parquet"
        if isinstance(frame, pa.Table):
            pq.write_table(frame, path)
        else:
            frame.to_parquet(path, index=False)
        files[path.name] = sha256_file(path)
    manifest = {
        "schema": SCHEMA,
        "name": t.name,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "created_by": f"vlroute {__version__}",
        "reader": t.reader,
        "label": t.info.get("label", "unknown"),
        "license": t.info.get("license"),
        "set_info": t.info,
        "sources": t.sources,
        "reader_report": t.report,
        "source_digest": hashlib.sha256(json.dumps(t.sources, sort_keys=True).encode())
        .hexdigest(),
        "counts": {"samples": len(samples), "models": len(frames["models"]),
                   "records": frames["records"].num_rows,
                   "images": len(frames["images"]), "groups": int(samples["group"].nunique())},
        "split": {"seed": split.seed, "fractions": [split.train, split.dev, split.test],
                  "stratify": split.stratify, "honour_official": split.honour_official,
                  "official": t.info.get("official_split"),
                  "sizes": {k: int(v) for k, v in samples["split"].value_counts().items()}},
        "economics": {"catalog": catalog.source, "catalog_sha256": catalog.digest(),
                      "estimated_share": estimated,
                      "method": "tokens from the catalog's text/image rules; cost = tokens x "
                                "price; latency and energy from the catalog's profiles; "
                                "measured values in records win"},
        "files": files,
    }
    write_json_atomic(staging / "manifest.json", manifest)
