"""Readers turn a source format into :class:`~vlroute.data.tables.SourceTables`.

Each reader is a function ``read(src: Path, staging: Path) -> SourceTables``; ``staging`` is a
directory the reader may write extracted images into (they become the bench's ``images/``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vlroute._registry import Registry
from vlroute.data.tables import SourceTables

Reader = Callable[[Path, Path], SourceTables]
READERS: Registry[Reader] = Registry("reader")
READERS.register("jsonl", "vlroute.data.readers.jsonl:read_jsonl_set")
READERS.register("vlmevalkit", "vlroute.data.readers.vlmevalkit:read_vlmevalkit")
READERS.register("lmms_eval", "vlroute.data.readers.lmms_eval:read_lmms_eval")
READERS.register("csv", "vlroute.data.readers.tabular:read_csv")
READERS.register("parquet", "vlroute.data.readers.streamed:read_parquet")

__all__ = ["READERS", "Reader"]
