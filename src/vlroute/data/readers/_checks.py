"""Checks shared by the readers: each failure names the file, the line and the field.

Text is decoded as UTF-8 with the line of the first bad byte named; image paths must stay
inside the source folder (no absolute path, no ``..``) in every reader.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlroute._io import describe_decode_error, read_utf8
from vlroute.data.images import stays_inside
from vlroute.errors import ReaderError

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
               list: "a list", dict: "an object"}


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; malformed lines raise."""
    try:
        handle = path.open("rb")  # decoded line by line, so a bad byte is named by its line
    except OSError as exc:
        raise ReaderError(path, None, f"cannot open: {exc.strerror or exc}") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise decode_error(path, exc, first_line=number) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReaderError(path, f"line {number}",
                                  f"not valid JSON ({exc.msg}); expected one JSON object "
                                  "per line") from exc
            if not isinstance(obj, dict):
                raise ReaderError(path, f"line {number}",
                                  f"expected a JSON object, got {type(obj).__name__}")
            yield number, obj


def field(obj: dict[str, Any], key: str, kinds: tuple[type, ...], *, path: Path, where: str,
          nullable: bool = False, default: Any = ...) -> Any:
    """Return ``obj[key]`` after checking it is present and of one of ``kinds``."""
    if key not in obj:
        if default is not ...:
            return default
        raise ReaderError(path, where, f"missing required key {key!r}")
    value = obj[key]
    if value is None:
        if nullable:
            return None
        raise ReaderError(path, where, f"{key!r} is null; expected {_names(kinds)}")
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        raise ReaderError(path, where,
                          f"{key!r} is {type(value).__name__} {_short(value)}; "
                          f"expected {_names(kinds)}")
    return value


def score_value(obj: dict[str, Any], *, path: Path, where: str) -> float:
    """The ``score`` of an outcome: a finite number in [0, 1]."""
    value = float(field(obj, "score", (int, float), path=path, where=where))
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ReaderError(path, where, f"'score' is {value}; expected a number in [0, 1]")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_json_object(path: Path, *, missing_ok: bool = False) -> dict[str, Any]:
    """A JSON file holding one object; ``{}`` for a missing file when ``missing_ok``."""
    if missing_ok and not path.is_file():
        return {}
    try:
        data = json.loads(read_utf8(path))
    except OSError as exc:
        raise ReaderError(path, None, f"cannot open: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise decode_error(path, exc) from None
    except json.JSONDecodeError as exc:
        raise ReaderError(path, f"line {exc.lineno}", f"not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ReaderError(path, None, "expected a JSON object")
    return data


def decode_error(path: Path, exc: UnicodeDecodeError, *, first_line: int = 1) -> ReaderError:
    """A :class:`ReaderError` naming the line and the first byte that is not UTF-8."""
    where, message = describe_decode_error(exc, first_line)
    return ReaderError(path, where, message)


def read_text(path: Path) -> str:
    """The UTF-8 text of a source file; a bad byte or an unreadable file raises ReaderError."""
    try:
        return read_utf8(path)
    except OSError as exc:
        raise ReaderError(path, None, f"cannot open: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise decode_error(path, exc) from None


def check_utf8(path: Path, chunk: int = 1 << 24) -> None:
    """Raise ReaderError at the first byte of ``path`` that is not UTF-8 (for readers whose
    parser reports a bad byte without its place, or not at all); read in chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as handle:
        while True:
            block = handle.read(chunk)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                # exc.object is this block, after the undecoded tail (no newline) of the last
                raise decode_error(path, exc, first_line=line) from None
            if not block:
                return
            line += block.count(b"\n")


def relative_image_path(value: Any, *, path: Path, where: str | None) -> str:
    """An image reference checked to stay inside the source folder: a non-empty relative
    path without ``..`` (POSIX or Windows spelling), so a build never copies files from
    elsewhere on the machine into a bench."""
    if not isinstance(value, str) or not value:
        raise ReaderError(path, where, f"image entry {value!r}; expected a relative path string")
    if not stays_inside(value):
        raise ReaderError(path, where, f"image path {value!r} must be relative to the source "
                                       "folder and stay inside it (no absolute path, no '..')")
    return value
