"""A bench directory: Parquet tables plus a JSON manifest, never pickle.

Layout::

    DIR/manifest.json      schema version, name, sources + hashes, split spec, economics
    DIR/samples.parquet    one row per sample (ids, group, dataset, task, question, split, ...)
    DIR/images.parquet     one row per image reference (sample, path relative to DIR, size,
                           bytes, sha256)
    DIR/models.parquet     one row per model (modality, tier, prices and their status, ...)
    DIR/records.parquet    one row per (sample, model): score, tokens, cost, latency, energy,
                           and a flag per quantity saying whether it is estimated
    DIR/images/...         the image files referenced by images.parquet
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vlroute._io import describe_decode_error, read_utf8, sha256_file
from vlroute.data.matrices import MATRIX_FIELDS, Mapping, RoutingMatrices, release, unloaded
from vlroute.errors import BenchError

SCHEMA = "vlroute-bench/1"
TABLES = ("samples", "images", "models", "records")
#: text columns of records.parquet, read only on request (they can be most of its memory)
TEXT_COLUMNS = ("raw_score", "response", "prediction")
#: matrix field -> records column
#: pairs (samples x models) past which :meth:`Bench.matrices` maps float32 arrays on disk
OUT_OF_CORE_PAIRS = 25_000_000
RECORD_COLUMNS = {"quality": "score", "cost": "cost_usd", "latency": "latency_s",
                  "energy": "energy_j", "tokens_in": "tokens_in", "tokens_out": "tokens_out"}


@dataclass
class Bench:
    """A loaded bench: its manifest and tables.

    Use :meth:`matrices` for the arrays routers and metrics work on. ``records`` (one row per
    pair, the largest table) is read on first use; :meth:`matrices` streams it a row group at a
    time from disk when it has not been read, so a large bench is never held whole.
    """

    root: Path
    manifest: dict[str, Any]
    samples: pd.DataFrame
    images: pd.DataFrame
    models: pd.DataFrame
    _records: pd.DataFrame | None = None
    _text: bool = False

    @property
    def records(self) -> pd.DataFrame:
        """One row per (sample, model); text columns only when the bench was opened with
        ``text=True``."""
        if self._records is None:
            self._records = _read_records(self.root, self._text)
        return self._records

    @records.setter
    def records(self, frame: pd.DataFrame) -> None:
        self._records = frame

    @property
    def name(self) -> str:
        """The bench's name (from the source set)."""
        return str(self.manifest.get("name", self.root.name))

    @property
    def label(self) -> str:
        """Label type of the source: "binary", "graded", "mixed" or "unknown"."""
        return str(self.manifest.get("label", "unknown"))

    def candidate_models(self, *, all_models: bool = False) -> list[str]:
        """Models a router chooses among.

        By default the vision-language models; a bench without any (a text-only set) uses
        every model that is not a ``baseline``. ``all_models`` includes everything.
        """
        models = self.models
        if all_models:
            return list(models["model"])
        vlm = models.loc[models["modality"] == "vision-language", "model"]
        if len(vlm):
            return list(vlm)
        return list(models.loc[models["modality"] != "baseline", "model"])

    def matrices(self, models: list[str] | None = None, *, all_models: bool = False,
                 fields: Sequence[str] = MATRIX_FIELDS, out_of_core: bool | None = None
                 ) -> RoutingMatrices:
        """The routing matrices over ``models`` (default: :meth:`candidate_models`).

        Only ``fields`` are read; the others are all-NaN views that take no memory, listed in
        ``unloaded`` (an evaluation needs no token counts). Records are read a row group at a
        time. Past :data:`OUT_OF_CORE_PAIRS` pairs (or with ``out_of_core``) the matrices are
        float32 on a memory map of a temporary file (under ``TMPDIR``: put it on a disk, not
        a RAM-backed tmpfs) whose pages leave resident memory after each full pass, so a
        2M x 50 bench evaluates in about 3 GB; otherwise float64 in memory.
        """
        chosen = models if models is not None else self.candidate_models(all_models=all_models)
        known = list(self.models["model"])
        unknown = [m for m in chosen if m not in known]
        if unknown:
            raise BenchError(f"Unknown model(s) {', '.join(unknown)}; the bench has "
                             f"{', '.join(known)}.")
        bad = [f for f in fields if f not in MATRIX_FIELDS]
        if bad:
            raise BenchError(f"Unknown matrix field(s) {', '.join(bad)}; expected some of "
                             f"{', '.join(MATRIX_FIELDS)}.")
        n, m = len(self.samples), len(chosen)
        big = out_of_core if out_of_core is not None else n * m > OUT_OF_CORE_PAIRS
        dtype = np.float32 if big else np.float64
        arrays = {name: (_mapped((n, m)) if big else np.full((n, m), np.nan))
                  if name in fields else unloaded((n, m), dtype)
                  for name in MATRIX_FIELDS}
        model_pos = {name: k for k, name in enumerate(chosen)}
        col_of = np.array([model_pos.get(name, -1) for name in known])
        for part in self.record_parts([RECORD_COLUMNS[f] for f in fields]):
            cols = col_of[np.asarray(part["model_idx"])]
            keep = cols >= 0
            rows = np.asarray(part["sample_idx"]).astype(np.int64)[keep]
            for name in fields:
                values = np.asarray(part[RECORD_COLUMNS[name]])[keep]
                arrays[name][rows, cols[keep]] = values
        for name in fields:
            release(arrays[name])
        pa.default_memory_pool().release_unused()  # the record batches' buffers
        tiers = dict(zip(self.models["model"], self.models["tier"], strict=True))
        s = self.samples
        return RoutingMatrices(
            sample_ids=s["sample_id"].to_numpy(dtype=object),
            models=tuple(chosen),
            groups=s["split_group"].to_numpy(dtype=object),
            datasets=s["dataset"].to_numpy(dtype=object),
            tasks=s["task"].to_numpy(dtype=object),
            splits=s["split"].to_numpy(dtype=object),
            tiers=tuple(str(tiers[c]) for c in chosen),
            # repeated 0/1 outcomes collapsed to their mean (vlroute.data.repeats)
            rates=self.label == "rates",
            unloaded=frozenset(MATRIX_FIELDS) - set(fields),
            **arrays,
        )

    def record_columns(self) -> list[str]:
        """The columns of records.parquet (read from its footer when not loaded)."""
        if self._records is not None:
            return list(self._records.columns)
        return list(pq.read_schema(self.root / "records.parquet").names)

    def record_parts(self, columns: list[str]) -> Iterator[dict[str, np.ndarray]]:
        """``sample_idx``, ``model_idx`` and ``columns`` of the records, as arrays: the table
        read already, or a row group at a time from disk (a large bench is never whole)."""
        names = list(dict.fromkeys(["sample_idx", "model_idx", *columns]))
        if self._records is not None:
            yield {c: self._records[c].to_numpy() for c in names}
            return
        handle = pq.ParquetFile(self.root / "records.parquet")
        for batch in handle.iter_batches(batch_size=1 << 20, columns=names):
            yield {c: batch.column(c).to_numpy(zero_copy_only=False) for c in names}


def _mapped(shape: tuple[int, int]) -> np.ndarray:
    """A float32 array of NaN on an anonymous temporary file (under ``TMPDIR``; gone when the
    array is freed), its space reserved up front so that a full disk is an error here, not a
    crash on first write; see :func:`~vlroute.data.matrices.release`."""
    size = shape[0] * shape[1] * 4
    if not size:
        return np.zeros(shape, dtype=np.float32)
    with tempfile.TemporaryFile(prefix="vlroute-matrix-") as handle:
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, size)
            else:
                handle.truncate(size)
            buffer = Mapping(handle.fileno(), size)
        except OSError as exc:
            raise BenchError(f"cannot map a {size / 2**20:,.0f} MB matrix in "
                             f"{tempfile.gettempdir()} ({exc.strerror or exc}); give TMPDIR "
                             "a disk with room, or evaluate fewer models.") from exc
    arr = np.frombuffer(buffer, dtype=np.float32).reshape(shape)
    arr[:] = np.nan
    return arr


def load_bench(root: Path | str, *, verify: bool = False, text: bool = False) -> Bench:
    """Open a bench directory; with ``verify``, check every table against its hash.

    The records' text columns (raw score, response, prediction) are read only with ``text``.
    """
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise BenchError(f"{root} is not a bench: no manifest.json (build one with "
                         "`vlroute bench build`).")
    manifest = _read_manifest(manifest_path)
    if manifest.get("schema") != SCHEMA:
        raise BenchError(f"{manifest_path}: schema {manifest.get('schema')!r} is not supported; "
                         f"expected {SCHEMA!r}.")
    tables = {}
    for name in TABLES:
        path = root / f"{name}.parquet"
        if not path.is_file():
            raise BenchError(f"{root}: missing {path.name}; the bench is incomplete.")
        if verify and sha256_file(path) != manifest["files"].get(path.name):
            raise BenchError(f"{path}: content does not match the hash in manifest.json.")
        try:
            if name != "records":
                tables[name] = pd.read_parquet(path)
            else:
                pq.read_schema(path)     # the footer only: records are read on first use
        except (OSError, ValueError) as exc:
            raise BenchError(f"{path}: not a readable Parquet table ({exc}); rebuild the "
                             "bench.") from exc
    return Bench(root=root, manifest=manifest, _text=text, **tables)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(read_utf8(path))
    except UnicodeDecodeError as exc:
        where, what = describe_decode_error(exc)
        raise BenchError(f"{path}, {where}: {what}.") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}).") from exc
    except OSError as exc:
        raise BenchError(f"{path}: cannot read ({exc.strerror or exc}).") from exc
    if not isinstance(manifest, dict):
        raise BenchError(f"{path}: expected a JSON object, got {type(manifest).__name__}.")
    return manifest


def _read_records(root: Path, text: bool) -> pd.DataFrame:
    path = root / "records.parquet"
    columns = None if text else [c for c in pq.read_schema(path).names
                                 if c not in TEXT_COLUMNS]
    return pd.read_parquet(path, columns=columns)


def resplit(bench: Bench, seed: int, protocol: str = "grouped") -> np.ndarray:
    """Split labels for another seed, with the bench's own fractions and options.

    ``protocol="random"`` is VL-RouterBench's per-sample random split: every sample is its
    own group (variants of one question fall on both sides) and an official split is
    ignored. It measures what a published number measured, leakage included; ``grouped``
    (the default) keeps groups together.
    """
    from vlroute.data.splits import SplitSpec, assign_splits

    if protocol not in ("grouped", "random"):
        raise BenchError(f"protocol must be 'grouped' or 'random', got {protocol!r}.")
    spec = bench.manifest.get("split", {})
    train, dev, test = spec.get("fractions", (0.7, 0.1, 0.2))
    if protocol == "random":
        split = SplitSpec(seed=seed, train=train, dev=dev, test=test, honour_official=False)
        return assign_splits(bench.samples["sample_id"].astype(str).tolist(), split,
                             datasets=bench.samples["dataset"].tolist())
    split = SplitSpec(seed=seed, train=train, dev=dev, test=test,
                      stratify=bool(spec.get("stratify", False)),
                      honour_official=bool(spec.get("honour_official", True)))
    official = None
    if spec.get("official") == "meta.split":
        official = [json.loads(m).get("split") if m else None for m in bench.samples["meta"]]
    return assign_splits(bench.samples["split_group"].tolist(), split,
                         datasets=bench.samples["dataset"].tolist(), official=official)
