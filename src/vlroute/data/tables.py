"""Source tables: what every reader produces, before a bench is built.

A reader turns one source format into three tables that follow the shared data contract
(``samples``, ``outcomes``, ``models``) plus the set's info. Column names and meanings are the
ones of the contract in the shared data README.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

SAMPLE_COLUMNS = ("sample_id", "dataset", "group", "task", "question", "images", "answer", "meta")
OUTCOME_COLUMNS = ("sample_id", "model", "score", "raw_score", "response", "prediction")
#: optional measured quantities an outcome may carry; measured values win over estimates
MEASURED_COLUMNS = ("tokens_in", "tokens_out", "cost_usd", "latency_s", "energy_j", "ttft_s")
MODEL_COLUMNS = ("model", "display_name", "family", "params_b", "open_weights", "modality",
                 "notes")
MODALITIES = ("vision-language", "text-only", "baseline")
#: outcome rows a bench build handles at a time: bounds its memory on very large sources
CHUNK_ROWS = 1 << 20


@dataclass(frozen=True)
class OutcomeStream:
    """Outcomes read from their file in chunks, never held whole (large long-format files).

    ``read()`` yields DataFrames of the outcome columns in file order, with ``sample_idx``
    and ``model_idx`` (rows of the samples and models tables) in place of the ids; a
    source's problems (a bad score) are raised as the chunk holding them is read.
    ``columns`` are the outcome columns that hold a value somewhere in the source.
    """

    rows: int
    columns: tuple[str, ...]
    read: Callable[[], Iterator[pd.DataFrame]]


@dataclass
class SourceTables:
    """The three tables of one evaluation set and where they came from.

    ``samples.images`` holds lists of image paths relative to ``image_root``; ``samples.meta``
    and ``outcomes.raw_score`` hold JSON text.
    """

    name: str
    reader: str
    samples: pd.DataFrame
    #: the outcomes in memory, or None when ``stream`` reads them from their file
    outcomes: pd.DataFrame | None
    models: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    image_root: Path | None = None
    sources: list[dict[str, str]] = field(default_factory=list)
    #: per-file reading notes (rows read, joined, unjoinable, unscored, failed inferences)
    report: list[str] = field(default_factory=list)
    stream: OutcomeStream | None = None

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        """The outcomes a chunk at a time, in order: the stream's chunks, or slices of the
        frame of at most ``rows`` rows."""
        if self.stream is not None:
            yield from self.stream.read()
            return
        assert self.outcomes is not None
        for start in range(0, len(self.outcomes), rows):
            yield self.outcomes.iloc[start:start + rows]

    def in_memory(self) -> SourceTables:
        """These tables with every outcome in one frame (a stream read whole, its ids
        restored); for steps that need all outcomes at once (collapsing repeats)."""
        if self.stream is None:
            return self
        frames = list(self.stream.read())
        frame = (pd.concat(frames, ignore_index=True) if frames
                 else pd.DataFrame({"sample_idx": [], "model_idx": []}))
        sample_ids = pd.Index(self.samples["sample_id"].astype(str))
        models = pd.Index(self.models["model"].astype(str))
        ids = pd.DataFrame({
            "sample_id": pd.Categorical.from_codes(frame["sample_idx"].to_numpy(), sample_ids),
            "model": pd.Categorical.from_codes(frame["model_idx"].to_numpy(), models)})
        outcomes = pd.concat([ids, frame.drop(columns=["sample_idx", "model_idx"])], axis=1)
        return replace(self, outcomes=outcomes, stream=None)


_SIZE = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)b(?![a-z])", re.IGNORECASE)


def params_from_name(model: str) -> float | None:
    """A parameter count read off a model name ("Qwen2-VL-7B" -> 7.0), or None."""
    found = _SIZE.findall(model.replace("_", "-"))
    return float(found[-1]) if found else None


def models_from_names(models: list[str]) -> pd.DataFrame:
    """A models table for sources that only name their models (VLMEvalKit, lmms-eval).

    A size in the name ("7b") marks an open-weight model of that size; others are treated as
    API models. The cost catalog flags every fallback price.
    """
    params = [params_from_name(m) for m in models]
    return pd.DataFrame({
        "model": models,
        "display_name": models,
        "family": [m.split("-")[0] for m in models],
        "params_b": [math.nan if p is None else p for p in params],
        "open_weights": [p is not None for p in params],
        "modality": ["vision-language"] * len(models),
        "notes": ["size read from the name" if p is not None else "" for p in params],
    })
