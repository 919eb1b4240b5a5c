"""Field checks shared by the readers: each failure names the file, the line and the field."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlroute.errors import ReaderError

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
               list: "a list", dict: "an object"}


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; malformed lines raise."""
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise ReaderError(path, None, f"cannot open: {exc.strerror or exc}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
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
        data = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ReaderError(path, None, f"cannot open: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ReaderError(path, f"line {exc.lineno}", f"not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ReaderError(path, None, "expected a JSON object")
    return data
