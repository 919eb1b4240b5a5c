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
from vlroute.data.readers.tabular import REQUIRED, _first_rows, _models, _samples, _scores
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
    row's group is checked against its value's first row."""

    def __init__(self, src: Path, key: str, fields: list[str]) -> None:
        self.src, self.key, self.fields = src, key, fields
        self.known = pa.array([], pa.string())
        self.groups = pa.array([], pa.string())
        self.rows: list[np.ndarray] = []
        self.firsts: list[pa.Table] = []

    def add(self, table: pa.Table, first: int) -> None:
        """Take in one batch."""
        ids = _ids(self.src, table, self.key, first)
        encoded = pc.dictionary_encode(ids)
        distinct, codes = encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False)
        where = pc.index_in(distinct, value_set=self.known)
        new = where.is_null().to_numpy(zero_copy_only=False)
        if new.any():
            at = _first_rows(codes, len(distinct))[new]
            self.firsts.append(table.select(self.fields).take(pa.array(at)))
            self.rows.append(at + first)
            self.known = pa.concat_arrays([self.known, distinct.filter(pa.array(new))])
            if "group" in self.fields:
                groups = _ids(self.src, table, "group", first).take(pa.array(at))
                self.groups = pa.concat_arrays([self.groups, groups])
            where = pc.index_in(distinct, value_set=self.known)
        if "group" in self.fields:
            index = np.asarray(where.to_numpy(zero_copy_only=False), dtype=np.int64)[codes]
            self._check_groups(table, index, first)

    def _check_groups(self, table: pa.Table, index: np.ndarray, first: int) -> None:
        groups = _ids(self.src, table, "group", first)
        bad = pc.not_equal(groups, self.groups.take(pa.array(index))).to_numpy(
            zero_copy_only=False)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ReaderError(self.src, f"row {first + k}",
                              f"sample {self.known[index[k]].as_py()!r} has several groups; "
                              "a sample's fields must agree across its rows")

    def table(self) -> tuple[np.ndarray, pa.Table, np.ndarray]:
        """The values, their first rows' fields and those rows' numbers."""
        firsts = (pa.concat_tables(self.firsts, promote_options="permissive") if self.firsts
                  else pa.schema([]).empty_table())
        rows = np.concatenate(self.rows) if self.rows else np.zeros(0, dtype=np.int64)
        return np.asarray(self.known.to_pylist(), dtype=object), firsts, rows


def _has_values(meta: pq.FileMetaData, name: str) -> bool:
    """Whether column ``name`` holds a value somewhere (from the row groups' statistics;
    without statistics, assumed to)."""
    at = meta.schema.names.index(name)
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(at).statistics
        if stats is None or not stats.has_null_count \
                or stats.null_count < meta.row_group(g).num_rows:
            return True
    return False


def read_parquet(src: Path, staging: Path, *, rows: int = CHUNK_ROWS) -> SourceTables:
    """Read a long-format Parquet file, ``rows`` rows at a time."""
    src = Path(src)
    meta = _open(src).metadata
    names = meta.schema.names
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
    samples, models = pd.Index(sample_ids), pd.Index(model_ids)
    for first, table in _batches(src, ["sample_id", "model", "score", *columns], rows):
        chunk = pd.DataFrame({
            "sample_idx": _rows_of(samples, _ids(src, table, "sample_id", first)),
            "model_idx": _rows_of(models, _ids(src, table, "model", first)),
            "score": _scores(src, table, first)})
        for c in ("response", "prediction"):
            if c in columns:
                chunk[c] = pd.Series(table[c].to_numpy(zero_copy_only=False), dtype=object)
        if "raw_score" in columns:
            chunk["raw_score"] = [json.dumps(v) for v in table["raw_score"].to_pylist()]
        for c in MEASURED_COLUMNS:
            if c in columns:
                chunk[c] = pd.to_numeric(pd.Series(table[c].to_numpy(zero_copy_only=False)),
                                         errors="coerce")
        yield chunk


def _rows_of(index: pd.Index, ids: pa.Array) -> np.ndarray:
    """Row of each id in ``index`` (every id is there: the first pass saw them all)."""
    encoded = pc.dictionary_encode(ids)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    distinct = pd.Index(encoded.dictionary.to_pylist(), dtype=object)
    rows: np.ndarray = np.asarray(index.get_indexer(distinct), dtype=np.int64)[codes]
    return rows
