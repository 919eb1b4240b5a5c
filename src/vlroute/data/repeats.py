"""Repeated outcomes: several results of one model on one sample (sampling at temperature > 0,
repeated runs), collapsed into one record whose score is their mean: a success rate for 0/1
outcomes, which routers then learn as P(solved) directly."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd

from vlroute.data.tables import MEASURED_COLUMNS, SourceTables
from vlroute.errors import DataError

#: how a bench treats repeated (sample, model) outcomes
POLICIES = ("error", "mean")


def repeated_pairs(outcomes: pd.DataFrame) -> int:
    """How many (sample, model) pairs of ``outcomes`` have more than one outcome."""
    counts = outcomes.groupby(["sample_id", "model"], sort=False, observed=True).size()
    return int((counts > 1).sum())


def collapse_repeats(t: SourceTables, policy: str) -> tuple[SourceTables, dict[str, object]]:
    """``t`` with each repeated pair's outcomes collapsed (``policy`` "mean"): score and the
    measured columns averaged, the first response and prediction kept, and the raw scores
    listed in ``raw_score`` (JSON: ``{"repeats": n, "scores": [...]}``). With "error", or
    with nothing repeated, ``t`` is returned unchanged. Also returns what was done (for the
    manifest): pairs repeated, the largest count, and whether the labels became rates.

    "error" leaves the check to the build, which fails at the first repeated pair (so a
    bench built under it has none); "mean" reads a streamed source's outcomes whole.
    """
    if policy not in POLICIES:
        raise DataError(f"repeats must be one of {', '.join(POLICIES)}, got {policy!r}.")
    if policy == "error":
        return t, {"policy": policy, "pairs_repeated": 0}
    t = t.in_memory()
    assert t.outcomes is not None
    repeated = repeated_pairs(t.outcomes)
    if not repeated:
        return t, {"policy": policy, "pairs_repeated": 0}
    out = t.outcomes.copy()
    out["_n"] = 1
    keys = ["sample_id", "model"]
    grouped = out.groupby(keys, sort=False, dropna=False)
    agg: dict[str, str] = {"score": "mean", "_n": "sum"}
    for column in out.columns:
        if column in MEASURED_COLUMNS:
            agg[column] = "mean"
        elif column not in (*keys, "score", "_n", "raw_score"):
            agg[column] = "first"
    collapsed = grouped.agg(agg).reset_index()
    scores = grouped["score"].apply(list).reset_index(name="_scores")
    collapsed = collapsed.merge(scores, on=keys, how="left")
    collapsed["raw_score"] = [
        json.dumps({"repeats": int(n), "scores": [float(s) for s in values]})
        for n, values in zip(collapsed["_n"], collapsed["_scores"], strict=True)]
    most = int(collapsed["_n"].max())
    collapsed = collapsed.drop(columns=["_n", "_scores"])[list(out.columns[:-1])]
    binary = bool(np.isin(t.outcomes["score"].dropna().to_numpy(dtype=float), (0.0, 1.0)).all())
    info = dict(t.info)
    if binary:
        info["label"] = "rates"
    note = (f"repeats: {repeated} (sample, model) pairs had several outcomes (up to {most}); "
            f"each collapsed to their mean score" + (" (a success rate)" if binary else ""))
    tables = replace(t, outcomes=pd.DataFrame(collapsed), info=info,
                     report=[*t.report, note])
    return tables, {"policy": policy, "pairs_repeated": repeated, "max_repeats": most,
                    "rates": binary}
