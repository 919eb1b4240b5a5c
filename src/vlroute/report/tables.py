"""Table models of a results document: plain rows of already-computed numbers, shared by the
HTML report and the Markdown summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table ("-" when missing)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def pm(row: dict[str, Any], key: str, digits: int) -> str:
    """``mean ± std`` when the row aggregates several seeds."""
    text = fmt(row.get(key), digits)
    std = row.get(f"{key}_std")
    return f"{text} ± {fmt(std, digits)}" if row.get("n_seeds", 1) > 1 and std is not None \
        else text


@dataclass(frozen=True)
class RankRow:
    """One router's aggregate row."""

    router: str
    scenario: str
    split: str
    values: dict[str, Any]
    setting: str


def _setting(doc: dict[str, Any], router: str, scenario: str) -> str:
    """The dev-chosen cost_weight / label_lambda per seed, as written in the curves."""
    picked = [str(c["selected"]) + (" (linear)" if c.get("cost_axis") == "linear" else "")
              for c in doc.get("curves", []) if c["router"] == router and c.get("split") == "dev"]
    if not picked:
        return ""
    parameter = next(c["parameter"] for c in doc["curves"] if c["router"] == router)
    return f"{parameter} " + ", ".join(picked)


def rank_rows(doc: dict[str, Any]) -> list[RankRow]:
    """Aggregate rows (mean over seeds), best Rank Score first within scenario and split."""
    rows = [r for r in doc["rows"] if r.get("seed") == "mean"]
    rows.sort(key=lambda r: (r["scenario"], r["split"], -(r.get("rank_score") or -1e9)))
    return [RankRow(r["router"], r["scenario"], r["split"], r,
                    _setting(doc, r["router"], r["scenario"])) for r in rows]


def breakdown_table(doc: dict[str, Any], by: str) -> tuple[list[str], list[str],
                                                            dict[tuple[str, str], Any]]:
    """(routers, keys, {(router, key): row}) of the per-``by`` breakdown (seed 0, test)."""
    cells = {(r["router"], r["key"]): r for r in doc.get("breakdown", []) if r["by"] == by}
    routers = list(dict.fromkeys(r for r, _ in cells))
    keys = sorted({k for _, k in cells})
    return routers, keys, cells


def best_per_key(routers: list[str], keys: list[str], cells: dict[tuple[str, str], Any]
                 ) -> dict[str, set[str]]:
    """Per key, the routers with the highest accuracy, the Oracle left out (it is the upper
    bound, not a competitor); ties mark every tied router."""
    out: dict[str, set[str]] = {}
    for key in keys:
        accs = {r: cells[(r, key)]["avg_acc"] for r in routers
                if r != "oracle" and (r, key) in cells and cells[(r, key)]["avg_acc"] is not None}
        if accs:
            top = max(accs.values())
            out[key] = {r for r, a in accs.items() if a >= top - 1e-12}
    return out
