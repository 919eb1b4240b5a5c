"""Table models of a results document: plain rows of already-computed numbers, shared by the
HTML report and the Markdown summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the scenario the report leads with (``vlroute.scenarios.TUNED``; the report reads documents
#: only, so the name is spelled out here)
LEAD_SCENARIO = "cost_weight@dev"
#: training-free routers; version 1 documents do not mark rows as baselines, their names do
BASELINE_NAMES = ("oracle", "strongest_global", "cheapest_global", "strongest_per_dataset",
                  "random", "best_single_by_rank")


def is_learned(row: dict[str, Any]) -> bool:
    """Whether an aggregate row is a learned router (not a baseline, not a single model)."""
    if row.get("kind"):
        return bool(row["kind"] in ("quality", "policy"))
    return row["router"] not in BASELINE_NAMES and not row["router"].startswith("single:")


def scenario_order(doc: dict[str, Any]) -> list[str]:
    """The document's scenario names, ``cost_weight@dev`` first, then as evaluated."""
    names = list(dict.fromkeys([*(s["name"] for s in doc.get("scenarios", [])),
                                *(r["scenario"] for r in doc["rows"])]))
    return sorted(names, key=lambda n: n != LEAD_SCENARIO)


def pct(value: Any) -> str:
    """A fraction as a whole percentage ("-" when missing)."""
    return "-" if value is None else f"{value:.0%}"


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table ("-" when missing)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def pm(row: dict[str, Any], key: str, digits: int = 3, *, percent: bool = False) -> str:
    """``mean ± std`` when the row aggregates several seeds (``percent``: as percentages)."""
    mean, std = split_pm(row, key, digits, percent=percent)
    return f"{mean} {std}" if std else mean


def split_pm(row: dict[str, Any], key: str, digits: int = 3, *, percent: bool = False
             ) -> tuple[str, str]:
    """The mean and "± std" ("" for one seed) of ``key``, formatted apart."""
    show = pct if percent else (lambda v: fmt(v, digits))
    std = row.get(f"{key}_std")
    return show(row.get(key)), (f"± {show(std)}" if row.get("n_seeds", 1) > 1
                                and std is not None else "")


@dataclass(frozen=True)
class RankRow:
    """One router's aggregate row."""

    router: str
    scenario: str
    split: str
    values: dict[str, Any]
    #: what dev chose per seed, short ("cost_weight 0.28 lin, 0.65"); "" outside cost_weight@dev
    setting: str
    #: the same in full (every digit; auto's families and labels)
    setting_full: str = ""


def _short(value: Any) -> str:
    return f"{value:.2g}" if isinstance(value, float) else str(value)


def dev_setting(doc: dict[str, Any], router: str) -> tuple[str, str]:
    """The dev-chosen cost_weight / label_lambda per seed, as written in the curves, or what
    ``auto`` chose per seed; short and in full."""
    if router == "auto" and doc.get("auto"):
        picks = [("single", f"seed {a['seed']}: single model {a['params'].get('model')}")
                 if a["router"] == "constant" else
                 (a["router"], f"seed {a['seed']}: {a['router']}, {a.get('labels')} labels, "
                               f"{a.get('scenario')}") for a in doc["auto"]]
        return ", ".join(p for p, _ in picks), "; ".join(f for _, f in picks)
    curves = [c for c in doc.get("curves", []) if c["router"] == router
              and c.get("split") == "dev"]
    if not curves:
        return "", ""
    linear = [c.get("cost_axis") == "linear" for c in curves]
    short = [_short(c["selected"]) + (" lin" if lin else "")
             for c, lin in zip(curves, linear, strict=True)]
    full = [str(c["selected"]) + (" (linear axis)" if lin else "")
            for c, lin in zip(curves, linear, strict=True)]
    parameter = curves[0]["parameter"]
    return f"{parameter} " + ", ".join(short), f"{parameter} " + ", ".join(full)


def rank_rows(doc: dict[str, Any]) -> list[RankRow]:
    """Aggregate rows (mean over seeds): scenarios in :func:`scenario_order`, then by split,
    best Rank Score first."""
    order = {name: i for i, name in enumerate(scenario_order(doc))}
    rows = [r for r in doc["rows"] if r.get("seed") == "mean"]
    rows.sort(key=lambda r: (order[r["scenario"]], r["split"],
                             -(r["rank_score"] if r.get("rank_score") is not None else -1e9)))
    out = []
    for r in rows:
        short, full = dev_setting(doc, r["router"]) if r["scenario"] == LEAD_SCENARIO else ("", "")
        out.append(RankRow(r["router"], r["scenario"], r["split"], r, short, full))
    return out


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
