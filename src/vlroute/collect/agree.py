"""``vlroute judge agree``: how well a run's judge scores agree with human labels.

The human file is JSON lines with ``sample_id``, ``model`` and a score field (``--field``,
default ``score``) on a stated scale (``--scale LO,HI``), mapped linearly to 0-10:
s -> (s - LO) x 10 / (HI - LO); Vibe-Eval's 1-5 becomes (s - 1) x 2.5. A set's own
``outcomes.jsonl`` is such a file (``--field raw_score --scale 1,5`` for Vibe-Eval). The
mapping is stored with the result, beside the judge's model and rubric version, the MES and
the bootstrap settings.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlroute.data.readers._checks import iter_jsonl
from vlroute.errors import DataError, ReaderError
from vlroute.metrics.agreement import agreement

SCHEMA = "vlroute-agreement/1"


@dataclass(frozen=True)
class ScaleMapping:
    """A linear map of scores on [low, high] to 0-10."""

    low: float
    high: float

    @classmethod
    def parse(cls, text: str) -> ScaleMapping:
        """``LO,HI`` (e.g. ``1,5``); ValueError naming what is expected."""
        try:
            low, high = (float(p) for p in text.split(","))
        except ValueError:
            raise ValueError(f"scale {text!r}: expected LO,HI such as 1,5 or 0,10.") from None
        if not high > low:
            raise ValueError(f"scale {text!r}: HI must be greater than LO.")
        return cls(low, high)

    def __call__(self, value: float) -> float:
        return (value - self.low) * 10.0 / (self.high - self.low)

    def describe(self) -> dict[str, Any]:
        factor = 10.0 / (self.high - self.low)
        return {"from": [self.low, self.high], "to": [0, 10],
                "formula": f"(s - {self.low:g}) * {factor:g}"}


def read_scores(path: Path, field: str, mapping: ScaleMapping | None
                ) -> dict[tuple[str, str], float]:
    """(sample_id, model) -> score on 0-10 (mapped), for rows whose ``field`` is a number
    (null: not labelled). Errors name the line: a row without a ``sample_id`` and ``model``
    string, a (sample_id, model) pair labelled twice, a label that is not a finite number
    (a boolean included) or lies outside the scale."""
    out: dict[tuple[str, str], float] = {}
    first: dict[tuple[str, str], int] = {}
    for number, row in iter_jsonl(Path(path)):
        sample, model = row.get("sample_id"), row.get("model")
        if not isinstance(sample, str) or not isinstance(model, str) or not sample \
                or not model:
            raise ReaderError(path, f"line {number}", "expected 'sample_id' and 'model' "
                              f"strings; got {sample!r} and {model!r}")
        if (sample, model) in first:
            raise ReaderError(path, f"line {number}", f"({sample!r}, {model!r}) is labelled "
                              f"again (first on line {first[(sample, model)]}); expected one "
                              "label per (sample_id, model)")
        first[(sample, model)] = number
        value = row.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ReaderError(path, f"line {number}", f"{field!r} is {value!r}; expected a "
                                                      "number or null")
        mapped = mapping(float(value)) if mapping else float(value)
        if not -1e-9 <= mapped <= 10 + 1e-9:
            raise ReaderError(path, f"line {number}", f"{field!r} is {value}, {mapped:g} on "
                              "0-10 after the mapping; check --scale")
        out[(sample, model)] = mapped
    return out


def judge_scores(run: Path) -> tuple[dict[tuple[str, str], float], dict[str, Any]]:
    """The run's judged scores (0-10) and the judge (model, rubric) that gave them."""
    scores: dict[tuple[str, str], float] = {}
    judges: set[tuple[str, str]] = set()
    for _, row in iter_jsonl(Path(run) / "outcomes.jsonl"):
        judge = row.get("judge")
        if isinstance(judge, dict) and isinstance(row.get("raw_score"), int | float):
            scores[(str(row["sample_id"]), str(row["model"]))] = float(row["raw_score"])
            judges.add((str(judge.get("model")), str(judge.get("rubric"))))
    if not scores:
        raise DataError(f"{run}: no judged outcomes; run `vlroute judge run {run} --judge "
                        "CONFIG` first.")
    return scores, {"models": sorted(m for m, _ in judges),
                    "rubrics": sorted(r for _, r in judges)}


def agree(run: Path, human: Path, *, field: str = "score", scale: ScaleMapping | None = None,
          mes: float = 6.0, n_boot: int = 1000, seed: int = 0,
          resample: str = "sample") -> dict[str, Any]:
    """The agreement document of ``run``'s judge against the ``human`` file; the bootstrap
    resamples questions (``resample="sample"``: the responses to one sample_id go together)
    or single pairs (``"pair"``)."""
    if resample not in ("sample", "pair"):
        raise ValueError(f"resample is {resample!r}; expected 'sample' or 'pair'.")
    judged, judge = judge_scores(run)
    labels = read_scores(human, field, scale)
    pairs = sorted(set(judged) & set(labels))
    if len(pairs) < 2:
        raise DataError(f"{human}: only {len(pairs)} (sample_id, model) pair(s) in common with "
                        f"the {len(judged)} judged outcomes of {run}; expected at least 2.")
    a = np.array([judged[p] for p in pairs])
    b = np.array([labels[p] for p in pairs])
    stats = agreement(a, b, mes=mes, n_boot=n_boot, seed=seed,
                      groups=[p[0] for p in pairs] if resample == "sample" else None)
    return {"schema": SCHEMA, "run": str(run), "human": str(human), "human_field": field,
            "mapping": scale.describe() if scale else {"from": [0, 10], "to": [0, 10],
                                                      "formula": "s"},
            "judge": judge, "unmatched": {"judged": len(judged) - len(pairs),
                                          "human": len(labels) - len(pairs)}, **stats}


def attach_to_results(results: Path, doc: dict[str, Any]) -> None:
    """Add ``doc`` to the ``agreement`` list of the results document ``results`` (replacing
    an entry for the same run and human file), rewritten atomically; the report shows it."""
    from vlroute._io import write_json_atomic
    from vlroute.evaluation.results import load_results

    load_results(results)                    # one readable results document, or an error
    raw = json.loads(Path(results).read_text("utf-8"))
    kept = [e for e in raw.get("agreement") or []
            if (e.get("run"), e.get("human")) != (doc["run"], doc["human"])]
    raw["agreement"] = [*kept, doc]
    write_json_atomic(Path(results), raw)


__all__ = ["SCHEMA", "ScaleMapping", "agree", "attach_to_results", "judge_scores",
           "read_scores"]
