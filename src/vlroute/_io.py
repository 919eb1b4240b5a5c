"""Atomic file and directory writes (nothing half-written is ever left behind), and UTF-8
reads whose decoding errors say where the bad byte is."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results and benches are for sharing
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    write_text_atomic(target, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def atomic_directory(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``target`` in one rename.

    If ``target`` exists and ``overwrite`` is false, raise ``FileExistsError`` before any work.
    On failure the staging directory is removed and an existing ``target`` is kept as it was.
    """
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite to replace it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging",
                                    dir=target.parent))
    os.chmod(staging, 0o755)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, backup)
    os.replace(staging, target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_utf8(path: Path) -> str:
    """The text of ``path``; a byte that is not UTF-8 raises ``UnicodeDecodeError`` whose
    ``object`` is the whole file (so :func:`describe_decode_error` can name the line)."""
    return Path(path).read_bytes().decode("utf-8")


def describe_decode_error(exc: UnicodeDecodeError, first_line: int = 1) -> tuple[str, str]:
    """Where (``"line N"``, counting from ``first_line``) and what: the first byte of
    ``exc.object`` that is not UTF-8."""
    data = bytes(exc.object)
    start = exc.start
    line = first_line + data.count(b"\n", 0, start)
    column = start - (data.rfind(b"\n", 0, start) + 1) + 1
    return (f"line {line}", f"byte 0x{data[start]:02x} at column {column} is not UTF-8; "
                            "expected UTF-8 text (re-save the file as UTF-8)")
