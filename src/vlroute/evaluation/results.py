"""The ``vlroute-results/2`` document that ``eval`` writes and ``report`` reads.

Top-level keys:

- ``schema``: "vlroute-results/2" (version 1 documents, without ``tau_curves`` and
  ``skipped``, are still read); ``created_at``; ``vlroute_version``;
- ``bench``: name, path, label, sources, licence, commit, economics (catalog, which quantities
  are estimated and how), candidate models, tiers, cost bounds, split;
- ``scenarios``: each scenario's name, spec, family, mes, tau, by, rcs_weights;
- ``seeds``: per seed the reference model, the best single model by Rank Score, split sizes;
- ``rows``: one per router x scenario x split x seed (``seed`` an integer), plus aggregates
  with ``seed`` = "mean" carrying every metric's mean and a ``<metric>_std`` field;
- ``singles``: every candidate model alone (aggregated over seeds), with ``pareto``;
- ``pareto``: the single models' frontier and its area per scenario and split;
- ``curves``: parameter sweeps (router, parameter, points);
- ``breakdown``: router, scenario, by (dataset | task), key, n, avg_acc, avg_cost_per_10k;
- ``timings``: router, with_encoders, batch, ms per request p50 / p99, requests per second;
- ``tau_curves``: per edge/cloud pair, the threshold curve (:mod:`vlroute.evaluation.tau`);
- ``skipped``: policy routers that sat out a scenario, and why;
- ``agreement`` (optional): judge-human agreement documents (``vlroute-agreement/1``) that
  ``vlroute judge agree --results`` attached; the report shows them.

A file may also hold several documents keyed by set name (``bench/results/routers.json``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlroute import __version__
from vlroute._io import write_json_atomic
from vlroute.data.bench import Bench
from vlroute.data.matrices import RoutingMatrices
from vlroute.errors import ResultsError
from vlroute.evaluation.scoring import METRICS, clean
from vlroute.metrics import avg_acc, avg_cost_per_10k
from vlroute.scenarios import Scenario

if TYPE_CHECKING:
    from vlroute.evaluation.runner import EvalSpec

SCHEMA = "vlroute-results/2"
READABLE = ("vlroute-results/1", SCHEMA)
_KEYS = ("router", "scenario", "split")


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def bench_section(bench: Bench) -> dict[str, Any]:
    """Provenance of the bench: sources, licence, economics and what is estimated."""
    econ = bench.manifest.get("economics", {})
    shares = econ.get("estimated_share", {})
    return {
        "name": bench.name, "path": str(bench.root), "label": bench.label,
        "license": bench.manifest.get("license"), "sources": bench.manifest.get("sources", []),
        "set_info": bench.manifest.get("set_info", {}), "commit": _commit(),
        "economics": {**econ, "estimated": sorted(q for q, s in shares.items() if s > 0)},
        "split": bench.manifest.get("split", {}),
    }


def _scenario_dict(s: Scenario) -> dict[str, Any]:
    return {"name": s.name, "spec": s.spec(), "family": s.family, "mes": s.mes, "tau": s.tau,
            "cost_weight": s.cost_weight, "by": s.by, "rcs_weights": list(s.rcs_weights)}


def new_document(bench: Bench, spec: EvalSpec, m: RoutingMatrices,
                 bounds_10k: tuple[float, float]) -> dict[str, Any]:
    """An empty results document for ``bench`` and ``spec``."""
    section = bench_section(bench)
    section.update(candidates=list(m.models), tiers=dict(zip(m.models, m.tiers, strict=True)),
                   cost_bounds_per_10k=list(bounds_10k))
    return {"schema": SCHEMA, "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "vlroute_version": __version__, "bench": section,
            "scenarios": [_scenario_dict(s) for s in spec.scenarios],
            "features": spec.feature_spec, "seeds": [], "rows": [],
            "singles": [], "pareto": [], "curves": [], "breakdown": [], "timings": [],
            "tau_curves": [], "skipped": []}


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (router, scenario, split); ``seed`` becomes "mean"."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in _KEYS), []).append(r)
    out = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(_KEYS, key, strict=True))
        row.update(seed="mean", n_seeds=len(members), n=members[0]["n"])
        if "kind" in members[0]:
            row["kind"] = members[0]["kind"]
        for metric in METRICS:
            values = np.array([np.nan if m[metric] is None else m[metric] for m in members],
                              dtype=float)
            finite = values[np.isfinite(values)]
            row[metric] = float(finite.mean()) if len(finite) else None
            row[f"{metric}_std"] = float(finite.std()) if len(finite) else None
        out.append(row)
    return out


def breakdown_rows(router: str, scenario: Scenario, decisions: np.ndarray,
                   data: RoutingMatrices) -> list[dict[str, Any]]:
    """Accuracy and cost per dataset (when several) and per task."""
    out = []
    for by, keys in (("dataset", data.datasets), ("task", data.tasks)):
        labels = np.asarray([str(k) if k is not None else "(none)" for k in keys], dtype=object)
        uniq = sorted(set(labels.tolist()))
        if by == "dataset" and len(uniq) < 2:
            continue
        for key in uniq:
            rows = labels == key
            d = decisions[rows]
            out.append({"router": router, "scenario": scenario.name, "by": by, "key": key,
                        "n": int(rows.sum()),
                        "avg_acc": clean(avg_acc(d, data.quality[rows])),
                        "avg_cost_per_10k": clean(avg_cost_per_10k(d, data.cost[rows]))})
    return out


def flat_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The aggregate rows (mean over seeds, with ``*_std``), for scripts (``--json``)."""
    return [r for r in doc["rows"] if r.get("seed") == "mean"]


def save_results(doc: dict[str, Any], path: Path) -> None:
    """Write a results document atomically (NaN is written as null)."""
    write_json_atomic(Path(path), json_safe(doc))


def json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return clean(obj)


def load_results(path: Path) -> dict[str, Any]:
    """Read and check one results document."""
    docs = load_result_set(path)
    if len(docs) != 1:
        raise ResultsError(f"{path}: holds {len(docs)} results documents "
                           f"({', '.join(docs)}); expected one.")
    return next(iter(docs.values()))


def load_result_set(path: Path) -> dict[str, dict[str, Any]]:
    """Read a file holding one results document, or several keyed by set name; returns
    them by name."""
    try:
        raw = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:    # unreadable, not UTF-8 or not JSON
        raise ResultsError(f"{path}: cannot read a results document ({exc}).") from exc
    if not isinstance(raw, dict):
        raise ResultsError(f"{path}: a {type(raw).__name__}, not a results document.")
    if "schema" in raw:
        return {str(raw.get("bench", {}).get("name", "results")): _checked(raw, path)}
    if not raw:
        raise ResultsError(f"{path}: empty; expected a results document.")
    return {str(k): _checked(v, f"{path}[{k}]") for k, v in raw.items()}


def _checked(doc: Any, where: object) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("schema") not in READABLE:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ResultsError(f"{where}: schema {got!r} is not supported; expected one of "
                           f"{', '.join(READABLE)}.")
    missing = [k for k in ("bench", "rows", "singles") if k not in doc]
    if missing:
        raise ResultsError(f"{where}: missing key(s) {', '.join(missing)}.")
    doc.setdefault("tau_curves", [])
    doc.setdefault("skipped", [])
    if "tau_curve" in doc:                       # version 1 files of bench/routers.py
        doc["tau_curves"].append(doc.pop("tau_curve"))
    return doc
