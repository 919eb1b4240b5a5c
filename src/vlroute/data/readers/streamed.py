"""Long-format Parquet read in row batches: a file of any size builds a bench in bounded memory.

A first pass over the sample and model columns finds each sample and model (in order of first
appearance, as the in-memory readers do) and checks that a sample's group agrees across its
rows; the outcomes are then streamed (:class:`~vlroute.data.tables.OutcomeStream`), a batch
at a time, every time the build asks for them. Columns and defaults are the ones of
:mod:`vlroute.data.readers.tabular`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlroute._io import sha256_file
from vlroute.data.readers.tabular import (
    REQUIRED,
    _column,
    _first_rows,
    _models,
    _samples,
    _scores,
)
from vlroute.data.tables import CHUNK_ROWS, MEASURED_COLUMNS, OutcomeStream, SourceTables
from vlroute.errors import ReaderError

SAMPLE_FIELDS = ("dataset", "group", "task", "question", "answer", "images", "image")
MODEL_FIELDS = ("params_b", "open_weights", "modality")
TEXT_FIELDS = ("response", "prediction", "raw_score")


def _open(src: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(src)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ReaderError(src, None, f"cannot read as Parquet ({exc})") from exc


def _batches(src: Path, columns: list[str], rows: int) -> Iterator[tuple[int, pa.Table]]:
    """(first row, table) of each batch of ``columns``."""
    first = 0
    try:
        for batch in _open(src).iter_batches(batch_size=rows, columns=columns):
            yield first, pa.Table.from_batches([batch])
            first += batch.num_rows
    except (OSError, pa.ArrowInvalid) as exc:
        raise ReaderError(src, None, f"cannot read as Parquet ({exc})") from exc


def _ids(src: Path, table: pa.Table, name: str, first: int) -> pa.Array:
    """``name`` as strings; an empty id fails naming its row."""
    column = table[name]
    if column.null_count:
        k = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ReaderError(src, f"row {first + k}", f"{name!r} is empty; expected an id")
    return pc.cast(column, pa.string()).combine_chunks()


class _FirstSeen:
    """The distinct values of an id column in order of first appearance, the first row of
    each in the file, and those rows' other ``fields``; with ``group`` among them, each
    row's group is checked against its value's first row. Work per batch is in the batch's
    distinct values (a dict lookup each), never in the values seen so far."""

    def __init__(self, src: Path, key: str, fields: list[str]) -> None:
        self.src, self.key, self.fields = src, key, fields
        self.index: dict[str, int] = {}
        self.groups: list[str] = []
        self.rows: list[np.ndarray] = []
        self.firsts: list[pa.Table] = []

    def add(self, table: pa.Table, first: int) -> None:
        """Take in one batch."""
        encoded = pc.dictionary_encode(_ids(self.src, table, self.key, first))
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        distinct = encoded.dictionary.to_pylist()
        at = _first_rows(codes, len(distinct))         # each value's first row in the batch
        new = np.array([v not in self.index for v in distinct], dtype=bool)
        groups = None
        if "group" in self.fields:
            groups, inside = self._batch_groups(table, codes, at, first)
            old = np.flatnonzero(~new)
            known = [self.groups[self.index[distinct[k]]] for k in old]
            bad = [int(at[k]) for k, g in zip(old, known, strict=True) if groups[k] != g]
            if inside is not None:
                bad.append(inside)
            if bad:                                 # the earliest row that disagrees
                row = min(bad)
                self._refuse(distinct[codes[row]], first + row)
        if new.any():
            for k in np.flatnonzero(new):
                self.index[distinct[k]] = len(self.index)
                if groups is not None:
                    self.groups.append(groups[k])
            self.firsts.append(table.select(self.fields).take(pa.array(at[new])))
            self.rows.append(at[new] + first)

    def _batch_groups(self, table: pa.Table, codes: np.ndarray, at: np.ndarray, first: int
                      ) -> tuple[list[str], int | None]:
        """The group of each distinct value's first row in the batch, and the first row
        (in the batch) whose group is not its value's first row's, if any."""
        groups = pc.dictionary_encode(_ids(self.src, table, "group", first))
        group_codes = groups.indices.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(group_codes != group_codes[at[codes]])
        names = groups.dictionary.to_pylist()
        return [names[c] for c in group_codes[at]], int(bad[0]) if len(bad) else None

    def _refuse(self, value: str, row: int) -> None:
        raise ReaderError(self.src, f"row {row}", f"sample {value!r} has several groups; a "
                                                  "sample's fields must agree across its rows")

    def table(self) -> tuple[np.ndarray, pa.Table, np.ndarray]:
        """The values, their first rows' fields and those rows' numbers."""
        firsts = (pa.concat_tables(self.firsts, promote_options="permissive") if self.firsts
                  else pa.schema([]).empty_table())
        rows = np.concatenate(self.rows) if self.rows else np.zeros(0, dtype=np.int64)
        return np.asarray(list(self.index), dtype=object), firsts, rows


def _has_values(meta: pq.FileMetaData, name: str) -> bool:
    """Whether top-level column ``name`` holds a value somewhere (from the row groups'
    statistics; a nested column, or one without statistics, is assumed to)."""
    paths = [meta.schema.column(j).path for j in range(meta.num_columns)]
    if name not in paths:
        return True
    at = paths.index(name)
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(at).statistics
        if stats is None or not stats.has_null_count \
                or stats.null_count < meta.row_group(g).num_rows:
            return True
    return False


def read_parquet(src: Path, staging: Path, *, rows: int = CHUNK_ROWS) -> SourceTables:
    """Read a long-format Parquet file, ``rows`` rows at a time."""
    src = Path(src)
    handle = _open(src)
    meta, names = handle.metadata, handle.schema_arrow.names     # top-level columns
    if not meta.num_rows:
        raise ReaderError(src, None, "no rows; a long-format table needs one row per "
                                     "(sample, model)")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ReaderError(src, None, f"missing column(s) {', '.join(missing)}; a long-format "
                                     f"table needs {', '.join(REQUIRED)}")
    samples = _FirstSeen(src, "sample_id", [c for c in SAMPLE_FIELDS if c in names])
    models = _FirstSeen(src, "model", [c for c in MODEL_FIELDS if c in names])
    for first, table in _batches(src, ["sample_id", "model", *samples.fields,
                                       *models.fields], rows):
        samples.add(table, first)
        models.add(table, first)
    sample_ids, firsts, where = samples.table()
    model_ids, model_rows, _ = models.table()
    outcome_columns = [c for c in (*TEXT_FIELDS, *MEASURED_COLUMNS) if c in names]
    stream = OutcomeStream(
        rows=meta.num_rows,
        columns=("score", *(c for c in outcome_columns if _has_values(meta, c))),
        read=lambda: _outcomes(src, rows, outcome_columns, sample_ids, model_ids))
    return SourceTables(
        name=src.stem, reader="parquet", samples=_samples(src, firsts, sample_ids, where),
        outcomes=None, models=_models(src, model_rows, model_ids),
        info={"name": src.stem, "label": "unknown"}, image_root=src.parent,
        sources=[{"path": src.name, "sha256": sha256_file(src)}], stream=stream)


def _outcomes(src: Path, rows: int, columns: list[str], sample_ids: np.ndarray,
              model_ids: np.ndarray) -> Iterator[pd.DataFrame]:
    """The outcomes, a batch at a time, with sample and model rows in place of the ids."""
    samples = {v: k for k, v in enumerate(sample_ids)}
    models = {v: k for k, v in enumerate(model_ids)}
    for first, table in _batches(src, ["sample_id", "model", "score", *columns], rows):
        chunk = pd.DataFrame({
            "sample_idx": _rows_of(samples, _ids(src, table, "sample_id", first)),
            "model_idx": _rows_of(models, _ids(src, table, "model", first)),
            "score": _scores(src, table, first)})
        for c in ("response", "prediction"):
            if c in columns:
                chunk[c] = pd.Series(_column(table, c), dtype=object)
        if "raw_score" in columns:
            chunk["raw_score"] = [json.dumps(v) for v in table["raw_score"].to_pylist()]
        for c in MEASURED_COLUMNS:
            if c in columns:
                chunk[c] = pd.to_numeric(pd.Series(_column(table, c)), errors="coerce")
        yield chunk


def _rows_of(index: dict[str, int], ids: pa.Array) -> np.ndarray:
    """Row of each id (every id is in ``index``: the first pass saw them all); a lookup per
    distinct id of the batch."""
    encoded = pc.dictionary_encode(ids)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    rows = np.array([index[v] for v in encoded.dictionary.to_pylist()], dtype=np.int64)
    found: np.ndarray = rows[codes]
    return found
