"""Table loading shared by the toolkit readers: by extension, never unpickling."""

from __future__ import annotations

import ast
import base64
import binascii
import json
from pathlib import Path
from typing import Any

import pandas as pd

from vlroute.data.readers._checks import check_utf8, read_text
from vlroute.errors import ReaderError

TABLE_EXTENSIONS = (".xlsx", ".tsv", ".csv", ".json")


def load_table(path: Path) -> pd.DataFrame:
    """A VLMEvalKit table by extension; ``.pkl`` is refused (a pickle runs code on load)."""
    ext = path.suffix.lower()
    try:
        if ext == ".xlsx":
            try:
                return pd.read_excel(path, engine="openpyxl")
            except ImportError as exc:
                raise ReaderError(path, None, "reading .xlsx needs openpyxl: pip install "
                                              "'vlroute[vlmevalkit]' (or export the run "
                                              "with PRED_FORMAT=tsv)") from exc
        if ext == ".tsv":
            return read_delimited(path, sep="\t", keep_default_na=True)
        if ext == ".csv":
            return read_delimited(path)
        if ext == ".json":
            return pd.DataFrame(json.loads(read_text(path)))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, ReaderError):
            raise
        raise ReaderError(path, None, f"cannot read as a {ext} table ({exc})") from exc
    if ext == ".pkl":
        raise ReaderError(path, None, "pickle files are not read (loading a pickle runs code); "
                                      "re-export with PRED_FORMAT=tsv or json")
    raise ReaderError(path, None, f"unsupported extension {ext!r}; expected one of "
                                  f"{', '.join(TABLE_EXTENSIONS)}")


def read_delimited(path: Path, **options: Any) -> pd.DataFrame:
    """``pd.read_csv`` whose bytes that are not UTF-8 raise ReaderError with their line
    (pandas names only an offset into its buffer)."""
    try:
        frame: pd.DataFrame = pd.read_csv(path, **options)
    except UnicodeDecodeError:
        check_utf8(path)
        raise
    return frame


def lower_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Column names lower-cased, except single upper-case letters (option columns)."""
    return frame.rename(columns={c: c if (len(str(c)) == 1 and str(c).isupper())
                                 else str(c).lower() for c in frame.columns})


def norm_index(value: Any) -> str:
    """VLMEvalKit ``index`` as a string: ``12``, ``12.0`` and ``"12"`` all give ``"12"``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() else str(value)


def missing(value: Any) -> bool:
    """NaN, None and empty strings are missing."""
    return value is None or (isinstance(value, float) and value != value) or value == ""


def literal_list(value: Any) -> list[Any] | None:
    """A Python list literal in a cell, parsed safely; None when it is not one."""
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
        return parsed if isinstance(parsed, list) else None
    return None


def decode_image(text: str) -> tuple[bytes, str]:
    """Base64 image bytes and a file extension guessed from the magic bytes."""
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64 ({exc})") from exc
    if data.startswith(b"\x89PNG"):
        return data, ".png"
    if data.startswith(b"\xff\xd8"):
        return data, ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return data, ".webp"
    if data[:3] == b"GIF":
        return data, ".gif"
    raise ValueError("decoded bytes are not a PNG, JPEG, WebP or GIF image")
