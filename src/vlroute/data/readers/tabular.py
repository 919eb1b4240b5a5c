"""Long-format ``csv`` and ``parquet`` readers: one row per (sample, model).

CSV is read whole; Parquet in row batches (:mod:`vlroute.data.readers.streamed`), with the
columns and defaults below and the helpers of this module.

Required columns: ``sample_id``, ``model``, ``score`` (in [0, 1]). Optional sample columns
(``dataset``, ``group``, ``task``, ``question``, ``answer``, ``images`` as a JSON list or
``image`` as one path, relative to the file's folder and inside it), outcome columns (``raw_score``,
``response``, ``prediction`` and the measured ``tokens_in``, ``tokens_out``, ``cost_usd``,
``latency_s``, ``energy_j``) and model columns (``params_b``, ``open_weights``, ``modality``).
Defaults: ``dataset`` = the file's stem, ``group`` = ``sample_id``, ``open_weights`` = whether
``params_b`` is known, ``modality`` = vision-language.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from vlroute._io import sha256_file
from vlroute.data.readers._checks import check_utf8, relative_image_path
from vlroute.data.tables import MEASURED_COLUMNS, MODALITIES, SourceTables
from vlroute.errors import ReaderError

REQUIRED = ("sample_id", "model", "score")


def read_csv(src: Path, staging: Path) -> SourceTables:
    """Read a long-format CSV file."""
    try:
        table = pacsv.read_csv(src, convert_options=pacsv.ConvertOptions(
            auto_dict_encode=True, column_types={"sample_id": pa.string(), "model": pa.string(),
                                                 "group": pa.string()}))
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            check_utf8(Path(src))
        raise ReaderError(src, None, f"cannot parse as CSV ({exc})") from exc
    except OSError as exc:
        raise ReaderError(src, None, f"cannot parse as CSV ({exc})") from exc
    if any(_is_binary(field.type) for field in table.schema):  # what invalid UTF-8 becomes
        check_utf8(Path(src))
    return _from_table(Path(src), table, "csv", first_row=2)  # row 1 is the header


def _is_binary(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_binary(kind) or pa.types.is_large_binary(kind))


def _row(index: int, first_row: int) -> str:
    return f"row {index + first_row}"


def _encode(src: Path, table: pa.Table, name: str, first_row: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Integer code per row and the distinct values (in order of first appearance)."""
    column = table[name]
    if column.null_count:
        k = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ReaderError(src, _row(k, first_row), f"{name!r} is empty; expected an id")
    if pa.types.is_dictionary(column.type):  # row groups may carry different dictionaries
        column = column.unify_dictionaries()
    else:
        column = pc.dictionary_encode(column.cast(pa.string()))
    encoded = column.combine_chunks()
    return (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            np.asarray(encoded.dictionary.to_pylist(), dtype=object))


def _first_rows(codes: np.ndarray, n_values: int) -> np.ndarray:
    """Row of the first appearance of each code."""
    first = np.empty(n_values, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
    return first


def _column(table: pa.Table, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    column = table[name] if rows is None else table[name].take(pa.array(rows))
    if pa.types.is_dictionary(column.type):   # to_numpy of a dictionary can misplace nulls
        column = pc.cast(column, column.type.value_type)
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _scores(src: Path, table: pa.Table, first_row: int) -> np.ndarray:
    raw = table["score"]
    try:
        score = pc.cast(raw, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        score = pd.to_numeric(pd.Series(raw.to_pylist()), errors="coerce").to_numpy(float)
    bad = ~((score >= 0) & (score <= 1))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ReaderError(src, _row(k, first_row), f"'score' is {raw[k].as_py()!r}; expected "
                                                   "a number in [0, 1]")
    return np.asarray(score, dtype=float)


def _images(value: Any, src: Path, where: str) -> list[str]:
    if isinstance(value, list | tuple | np.ndarray):      # a list column
        return [relative_image_path(str(v), path=src, where=where) for v in value]
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return []
    try:
        parsed = json.loads(value)
    except (TypeError, json.JSONDecodeError):
        raise ReaderError(src, where, f"'images' is {value!r}; expected a JSON list of "
                                      "paths") from None
    if not isinstance(parsed, list):
        raise ReaderError(src, where, "'images' must be a JSON list of paths")
    return [relative_image_path(v, path=src, where=where) for v in parsed]


def _check_groups(src: Path, table: pa.Table, ids: np.ndarray, first: np.ndarray,
                  sample_idx: np.ndarray, first_row: int) -> None:
    """Every row of a sample names the group of its first row."""
    if "group" not in table.column_names:
        return
    group_idx, _ = _encode(src, table, "group", first_row)
    bad = group_idx != group_idx[first[sample_idx]]
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ReaderError(src, _row(k, first_row), f"sample {ids[sample_idx[k]]!r} has "
                                                   "several groups; a sample's fields "
                                                   "must agree across its rows")


def _samples(src: Path, firsts: pa.Table, ids: np.ndarray, where: np.ndarray
             ) -> pd.DataFrame:
    """The samples table from ``firsts``, the first row of each sample (``where``: their
    rows in the file, for messages)."""
    n = len(ids)
    names = set(firsts.column_names)

    def col(name: str, default: Any) -> Any:
        return _column(firsts, name) if name in names else np.full(n, default, dtype=object)

    if "images" in names:
        images = [_images(v, src, f"row {r}") for r, v in zip(where, col("images", None),
                                                               strict=True)]
    elif "image" in names:
        images = [[] if v is None or v != v or v == "" else
                  [relative_image_path(str(v), path=src, where=f"row {r}")]
                  for r, v in zip(where, col("image", None), strict=True)]
    else:
        images = [[] for _ in range(n)]
    groups = (np.asarray(pc.cast(firsts["group"], pa.string()).to_pylist(), dtype=object)
              if "group" in names else ids)
    question = col("question", "")
    return pd.DataFrame({
        "sample_id": ids, "dataset": col("dataset", src.stem), "group": groups,
        "task": col("task", None),
        "question": np.array(["" if q is None else str(q) for q in question], dtype=object),
        "images": images, "answer": col("answer", None), "meta": np.full(n, "{}", dtype=object),
    })


def _models(src: Path, table: pa.Table, names: np.ndarray, first: np.ndarray | None = None
            ) -> pd.DataFrame:
    """The models table; ``first``: each model's first row of ``table`` (default: ``table``
    has one row per model)."""
    cols = set(table.column_names)
    params = pd.to_numeric(pd.Series(_column(table, "params_b", first)), errors="coerce") \
        .to_numpy(dtype=float) if "params_b" in cols else np.full(len(names), np.nan)
    open_w = _column(table, "open_weights", first).astype(bool) if "open_weights" in cols \
        else ~np.isnan(params)
    modality = _column(table, "modality", first).astype(str) if "modality" in cols \
        else np.full(len(names), "vision-language", dtype=object)
    bad = [m for m in modality if m not in MODALITIES]
    if bad:
        raise ReaderError(src, None, f"modality {bad[0]!r}; expected one of "
                                     f"{', '.join(MODALITIES)}")
    return pd.DataFrame({"model": names.astype(str), "display_name": names.astype(str),
                         "family": None, "params_b": params, "open_weights": open_w,
                         "modality": modality, "notes": ""})


def _nulls(n: int) -> pd.arrays.ArrowExtensionArray:
    return pd.arrays.ArrowExtensionArray(pa.nulls(n, pa.string()))


def _from_table(src: Path, table: pa.Table, reader: str, first_row: int) -> SourceTables:
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ReaderError(src, None, f"missing column(s) {', '.join(missing)}; a long-format "
                                     f"table needs {', '.join(REQUIRED)}")
    sample_idx, sample_ids = _encode(src, table, "sample_id", first_row)
    model_idx, model_ids = _encode(src, table, "model", first_row)
    n = table.num_rows
    outcomes = pd.DataFrame({
        "sample_id": pd.Categorical.from_codes(sample_idx, pd.Index(sample_ids.astype(str))),
        "model": pd.Categorical.from_codes(model_idx, pd.Index(model_ids.astype(str))),
        "score": _scores(src, table, first_row)})
    for c in ("response", "prediction"):
        outcomes[c] = (pd.Series(_column(table, c), dtype=object) if c in table.column_names
                       else _nulls(n))
    outcomes["raw_score"] = ([json.dumps(v.item() if isinstance(v, np.generic) else v)
                              for v in _column(table, "raw_score")]
                             if "raw_score" in table.column_names else _nulls(n))
    for c in MEASURED_COLUMNS:
        if c in table.column_names:
            outcomes[c] = pd.to_numeric(pd.Series(_column(table, c)), errors="coerce")
    first = _first_rows(sample_idx, len(sample_ids))
    _check_groups(src, table, sample_ids, first, sample_idx, first_row)
    samples = _samples(src, table.take(pa.array(first)), sample_ids, first + first_row)
    models = _models(src, table, model_ids, _first_rows(model_idx, len(model_ids)))
    return SourceTables(name=src.stem, reader=reader, samples=samples, outcomes=outcomes,
                        models=models, info={"name": src.stem, "label": "unknown"},
                        image_root=src.parent,
                        sources=[{"path": src.name, "sha256": sha256_file(src)}])
