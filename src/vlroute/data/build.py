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
from vlroute.costs import Catalog
from vlroute.costs.estimate import QUANTITIES, PairEstimator, SampleInputs
from vlroute.data.bench import SCHEMA, TEXT_COLUMNS, Bench, load_bench
from vlroute.data.images import image_table
from vlroute.data.repeats import collapse_repeats
from vlroute.data.splits import SplitSpec, assign_splits, merge_groups
from vlroute.data.tables import MEASURED_COLUMNS, SourceTables
from vlroute.errors import DataError

Progress = Callable[[str], None]


class _PairCheck:
    """Rows of each chunk's outcomes in the samples and models tables, checked: unknown ids,
    a (sample, model) pair seen before (one bit per pair, so chunks are checked against all
    earlier ones) and scores outside [0, 1] fail naming the outcome's row."""

    def __init__(self, t: SourceTables) -> None:
        self.name = t.name
        self.samples = pd.Index(t.samples["sample_id"])
        self.models = pd.Index(t.models["model"])
        self.seen = np.zeros(len(self.samples) * len(self.models), dtype=bool)

    def codes(self, chunk: pd.DataFrame, first: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample and model rows of ``chunk``, whose first row is outcome row ``first``."""
        if "sample_idx" in chunk:        # a stream's chunks carry rows, checked when read
            sample_idx = chunk["sample_idx"].to_numpy(dtype=np.int64)
            model_idx = chunk["model_idx"].to_numpy(dtype=np.int64)
        else:
            sample_idx = self._rows(self.samples, chunk, "sample_id", "sample", first)
            model_idx = self._rows(self.models, chunk, "model", "model", first)
        pair = sample_idx * len(self.models) + model_idx
        again = self.seen[pair]
        _, firsts = np.unique(pair, return_index=True)
        inside = np.ones(len(pair), dtype=bool)
        inside[firsts] = False               # a later row of a pair seen in this chunk
        repeated = np.flatnonzero(again | inside)
        if len(repeated):
            k = int(repeated[0])
            raise DataError(f"{self.name}: outcome row {first + k} repeats the pair "
                            f"({self.samples[sample_idx[k]]!r}, {self.models[model_idx[k]]!r})"
                            "; if these are repeated runs of the model, build with "
                            "`--repeats mean` (or \"repeats\": \"mean\" in set.json) to learn "
                            "their success rate.")
        self.seen[pair] = True
        scores = chunk["score"].to_numpy(dtype=float)
        bad = ~((scores >= 0) & (scores <= 1))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(f"{self.name}: outcome row {first + k} has score {scores[k]}; "
                            "expected a number in [0, 1].")
        return sample_idx, model_idx

    def _rows(self, index: pd.Index, chunk: pd.DataFrame, column: str, what: str,
              first: int) -> np.ndarray:
        rows = index.get_indexer(pd.Index(chunk[column])).astype(np.int64)
        if (rows < 0).any():
            k = int(np.flatnonzero(rows < 0)[0])
            raise DataError(f"{self.name}: outcome row {first + k} refers to unknown {what} "
                            f"{chunk[column].iloc[k]!r}.")
        return rows


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


def _economics(catalog: Catalog, models: pd.DataFrame, samples: pd.DataFrame,
               images: pd.DataFrame) -> tuple[pd.DataFrame, PairEstimator]:
    """The models table with their economics, and the estimator of each pair's."""
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
    models = models.assign(
        tier=[e.tier for e in econ], profile=[e.profile for e in econ],
        price_in=[e.price_in for e in econ], price_out=[e.price_out for e in econ],
        price_status=[e.price_status for e in econ], image_rule=[e.image_rule for e in econ],
        params_b=[np.nan if e.params_b is None else e.params_b for e in econ],
        economics_notes=["; ".join(e.notes) for e in econ])
    return models, PairEstimator(catalog, econ, inputs)


def _pair_economics(estimator: PairEstimator, chunk: pd.DataFrame, sample_idx: np.ndarray,
                    model_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each pair's tokens, cost, latency and energy, and whether each was estimated."""
    response = chunk["response"] if "response" in chunk else pd.Series([None] * len(chunk))
    response_chars: np.ndarray = (
        response.str.len().to_numpy(dtype=float, na_value=np.nan)
        if response.notna().any() else np.full(len(response), np.nan))
    measured = {q: chunk[q].to_numpy(dtype=float) for q in MEASURED_COLUMNS if q in chunk}
    pairs = estimator.estimate(sample_idx, model_idx, response_chars, measured)
    columns: dict[str, np.ndarray] = {}
    for q in QUANTITIES:
        columns[q] = pairs.values[q]
        columns[f"{q}_estimated"] = pairs.estimated[q]
    return columns


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
    check = _PairCheck(tables)
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
        models, estimator = _economics(catalog, tables.models.reset_index(drop=True),
                                       samples, images)
        with _RecordsWriter(staging / "records.parquet", tables, samples, models) as records:
            for chunk in tables.chunks():
                sample_idx, model_idx = check.codes(chunk, records.rows)
                records.write(chunk, sample_idx, model_idx,
                              _pair_economics(estimator, chunk, sample_idx, model_idx))
        if not records.rows:
            raise DataError(f"{tables.name}: no outcomes; a bench needs at least one "
                            "(sample, model) result.")
        estimated = {q: round(records.estimated[q] / records.rows, 6) for q in QUANTITIES}
        note("writing")
        frames = {"samples": samples, "images": images, "models": models}
        _write(staging, tables, catalog, split, frames, records.rows, estimated)


def _text_column(values: pd.Series) -> pa.Array:
    return pa.array(values.astype(object).where(values.notna(), None).tolist(), pa.string()) \
        if values.notna().any() else pa.nulls(len(values), pa.string())


def _local_dictionary(index: np.ndarray, values: pa.Array) -> pa.DictionaryArray:
    """``values[index]`` dictionary-encoded over the values the chunk uses (a row group with
    a dictionary of every sample id would cost as much as the ids themselves)."""
    used, local = np.unique(index, return_inverse=True)
    return pa.DictionaryArray.from_arrays(pa.array(local.astype(np.int32)),
                                          values.take(pa.array(used)))


class _RecordsWriter:
    """records.parquet written a chunk of outcomes at a time (a row group or more each),
    built from numpy without a pandas copy; the estimated share of each quantity is counted
    as it goes."""

    def __init__(self, path: Path, t: SourceTables, samples: pd.DataFrame,
                 models: pd.DataFrame) -> None:
        self.ids = pa.array(samples["sample_id"].astype(str).tolist(), pa.string())
        self.names = pa.array(models["model"].astype(str).tolist(), pa.string())
        # ttft_s is measured only: a column only when the source has a value
        frame = t.outcomes
        self.ttft = ("ttft_s" in t.stream.columns if t.stream is not None else
                     frame is not None and "ttft_s" in frame and frame["ttft_s"].notna().any())
        fields = [("sample_idx", pa.int32()), ("model_idx", pa.int16()),
                  ("sample_id", pa.dictionary(pa.int32(), pa.string())),
                  ("model", pa.dictionary(pa.int32(), pa.string())), ("score", pa.float64()),
                  *((name, pa.string()) for name in TEXT_COLUMNS)]
        for q in QUANTITIES:
            fields += [(q, pa.float64()), (f"{q}_estimated", pa.bool_())]
        if self.ttft:
            fields.append(("ttft_s", pa.float64()))
        self.schema = pa.schema(fields)
        self.writer = pq.ParquetWriter(path, self.schema)
        self.rows = 0
        self.estimated = dict.fromkeys(QUANTITIES, 0)

    def __enter__(self) -> _RecordsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.close()

    def write(self, chunk: pd.DataFrame, sample_idx: np.ndarray, model_idx: np.ndarray,
              economics: dict[str, np.ndarray]) -> None:
        """Append one chunk's records."""
        n = len(chunk)
        columns: dict[str, pa.Array] = {
            "sample_idx": pa.array(sample_idx.astype(np.int32)),
            "model_idx": pa.array(model_idx.astype(np.int16)),
            "sample_id": _local_dictionary(sample_idx, self.ids),
            "model": pa.DictionaryArray.from_arrays(pa.array(model_idx.astype(np.int32)),
                                                    self.names),
            "score": pa.array(chunk["score"].to_numpy(dtype=float)),
        }
        for name in TEXT_COLUMNS:
            columns[name] = (_text_column(chunk[name]) if name in chunk
                             else pa.nulls(n, pa.string()))
        columns.update({k: pa.array(v) for k, v in economics.items()})
        if self.ttft:
            columns["ttft_s"] = pa.array(chunk["ttft_s"].to_numpy(dtype=float))
        self.writer.write_table(pa.table(columns, schema=self.schema))
        self.rows += n
        for q in QUANTITIES:
            self.estimated[q] += int(economics[f"{q}_estimated"].sum())


def _write(staging: Path, t: SourceTables, catalog: Catalog, split: SplitSpec,
           frames: dict[str, pd.DataFrame], records: int, estimated: dict[str, float]) -> None:
    files = {}
    samples = frames["samples"]
    for name in ("samples", "images", "models", "records"):
        path = staging / f"{name}.parquet"
        if name != "records":                # written already, a chunk at a time
            frames[name].to_parquet(path, index=False)
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
                   "records": records,
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
