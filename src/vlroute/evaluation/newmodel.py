"""``vlroute models add``: a serving bundle extended with a new model from a few labelled
samples (:func:`vlroute.routers.extend.add_model`), its costs, cost bounds and candidate mask
updated and recorded as such."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlroute._typing import FloatArray
from vlroute.data.bench import Bench
from vlroute.errors import VlrouteError
from vlroute.features.store import feature_matrix
from vlroute.metrics.routing import COST_FLOOR_RATIO, COST_FLOOR_USD
from vlroute.routers.bundle import Bundle, load_bundle
from vlroute.routers.extend import NotExtensibleError, add_model
from vlroute.routers.persistence import artifact_document, save_router
from vlroute.routers.quality import QualityRouter

TIERS = ("edge", "cloud")
#: the routers a model can be added to (vlroute.routers.extend)
EXTENSIBLE_NAMES = ("irt", "mf")
#: measured quantities an outcome row may carry
MEASURED = ("tokens_in", "tokens_out", "latency_s")


class OutcomesFileError(VlrouteError):
    """A new model's outcomes file is unreadable or does not match the bench."""


@dataclass(frozen=True)
class NewModel:
    """What to add: the model, its prices (USD per 1M tokens) and tier."""

    name: str
    price_in: float
    price_out: float
    tier: str

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("the new model needs a non-empty name.")
        if self.tier not in TIERS:
            raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {self.tier!r}.")
        for label, price in (("input", self.price_in), ("output", self.price_out)):
            if not np.isfinite(price) or price < 0:
                raise ValueError(f"the {label} price must be a number >= 0 (USD per 1M "
                                 f"tokens), got {price!r}.")


def read_outcomes(path: Path, model: str) -> list[dict[str, Any]]:
    """Rows of an outcomes file in the jsonl contract (``sample_id``, ``score`` in [0, 1];
    optional measured ``tokens_in``, ``tokens_out``, ``latency_s``); rows naming another
    ``model`` are skipped."""
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    try:
        lines = Path(path).read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OutcomesFileError(f"{path}: cannot read the outcomes file ({exc}).") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise OutcomesFileError(f"{path}:{number}: not a JSON object ({exc.msg}).") from exc
        if not isinstance(row, dict) or not isinstance(row.get("sample_id"), str):
            raise OutcomesFileError(f"{path}:{number}: expected an object with a string "
                                    "sample_id and a score in [0, 1].")
        if row.get("model", model) != model:
            continue
        score: Any = row.get("score")
        if not _number(score) or not 0 <= score <= 1:
            raise OutcomesFileError(f"{path}:{number}: score must be a number in [0, 1], got "
                                    f"{score!r}.")
        for key in MEASURED:
            if row.get(key) is not None and not (_number(row[key]) and row[key] >= 0):
                raise OutcomesFileError(f"{path}:{number}: {key} must be a finite number "
                                        f">= 0 (or absent), got {row[key]!r}.")
        if row["sample_id"] in seen:
            raise OutcomesFileError(f"{path}:{number}: sample {row['sample_id']!r} again "
                                    f"(first on line {seen[row['sample_id']]}); one outcome per "
                                    "sample.")
        seen[row["sample_id"]] = number
        rows.append(row)
    if not rows:
        raise OutcomesFileError(f"{path}: no outcomes of model {model!r} (rows need "
                                "sample_id and score; a model field, when present, must name "
                                "it).")
    return rows


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and bool(np.isfinite(value)))


def _measured(rows: list[dict[str, Any]], key: str) -> FloatArray | None:
    values = [r.get(key) for r in rows]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=float)
    return None


def extend_bundle(bundle_path: Path, new: NewModel, outcomes: Path, bench: Bench,
                  out: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write to ``out`` the bundle at ``bundle_path`` extended with ``new``, fitted from its
    ``outcomes`` on samples of ``bench`` (whose stored features must be the bundle's).
    Returns what was recorded in the new bundle's ``added_models``."""
    doc = artifact_document(bundle_path)
    if doc.get("router") not in EXTENSIBLE_NAMES:
        raise NotExtensibleError(
            f"{bundle_path}: a {doc.get('router')} bundle; a new model can be added to irt "
            "and mf bundles (a weight vector per model on a shared request side). Retrain "
            "with the new model's outcomes instead.")
    section = doc.get("bundle") or {}
    text, image = (section.get("feature_names") or [None, None])[:2]
    X_all, spec = feature_matrix(bench, text, image)
    bundle = load_bundle(bundle_path, feature_spec=spec)
    router = bundle.router
    if not isinstance(router, QualityRouter):
        raise NotExtensibleError(f"{bundle_path}: not a quality router.")
    rows = read_outcomes(outcomes, new.name)
    m = bench.matrices(all_models=True)
    index = {str(s): i for i, s in enumerate(m.sample_ids)}
    unknown = sorted({r["sample_id"] for r in rows} - set(index))
    if unknown:
        raise OutcomesFileError(f"{outcomes}: {len(unknown)} sample ids are not in the bench "
                                f"{bench.root} (e.g. {', '.join(unknown[:3])}).")
    at = np.array([index[r["sample_id"]] for r in rows])
    quality = np.array([float(r["score"]) for r in rows])
    with np.errstate(all="ignore"):
        tokens_in = _measured(rows, "tokens_in")
        tokens_out = _measured(rows, "tokens_out")
        latency = _measured(rows, "latency_s")
        t_in = tokens_in if tokens_in is not None else np.nanmean(m.tokens_in[at], axis=1)
        t_out = tokens_out if tokens_out is not None else np.nanmean(m.tokens_out[at], axis=1)
        usd = float(np.nanmean((t_in * new.price_in + t_out * new.price_out) / 1e6))
        same_tier = np.array([t == new.tier for t in router.tiers_])
        peers = same_tier if same_tier.any() else np.ones(len(same_tier), bool)
        seconds = float(latency.mean()) if latency is not None else float(
            np.nanmean(router.mean_cost_["latency"][peers]))
        joules = float(np.nanmean(router.mean_cost_["energy"][peers]))
    if not all(np.isfinite(v) and v >= 0 for v in (usd, seconds, joules)):
        raise OutcomesFileError(f"{outcomes}: the new model's mean cost could not be "
                                f"estimated (usd {usd}, latency {seconds}, energy {joules}); "
                                "give tokens_in, tokens_out and latency_s per row.")
    extended = add_model(router, new.name, X_all[at], quality, tier=new.tier,
                         mean_cost={"usd": usd, "latency": seconds, "energy": joules})
    old_low, old_high = router.bounds_
    extended.bounds_ = widened(router.bounds_, usd)
    record = {"model": new.name, "tier": new.tier, "n_labelled": len(rows),
              "mean_quality": float(quality.mean()), "price_in": new.price_in,
              "price_out": new.price_out,
              "mean_cost": {"usd": usd, "latency": seconds, "energy": joules},
              "cost_from": {"tokens_in": "measured" if tokens_in is not None else "bench mean",
                            "tokens_out": "measured" if tokens_out is not None
                            else "bench mean of the other models",
                            "latency": "measured" if latency is not None
                            else f"mean of the {new.tier} models",
                            "energy": f"mean of the {new.tier} models"},
              "cost_bounds_usd": {"before": [old_low, old_high],
                                  "after": list(extended.bounds_)},
              "fitted": "the new model's weights only; every other parameter frozen"}
    new_section = {
        **section,
        "candidates": [*section.get("candidates", []), new.name],
        "cost_bounds_usd": [float(b) for b in extended.bounds_],
        "mean_cost": {d: [float(v) for v in extended.mean_cost_[d]]
                      for d in ("usd", "latency", "energy")},
        "catalog": {**section.get("catalog", {}),
                    new.name: {"tier": new.tier, "price_in": new.price_in,
                               "price_out": new.price_out, "price_status": "user"}},
        "added_models": [*section.get("added_models", []), record]}
    info = dict(doc.get("info") or {})
    info["dev"] = _dev_after(bundle, extended, bench, X_all, info.get("dev") or {})
    info["extended"] = [*info.get("extended", []), new.name]
    save_router(extended, out, feature_spec=doc.get("feature_spec"), info=info,
                bundle=new_section, overwrite=overwrite)
    return record


def widened(bounds: tuple[float, float], usd: float) -> tuple[float, float]:
    """The cost bounds with one more model of mean cost ``usd``: unchanged unless it lies
    outside them (the other models' normalised costs, and their decisions, stay as tuned)."""
    low, high = bounds
    if usd > high:
        high = usd
    if usd < low:
        low = max(usd, COST_FLOOR_RATIO * high, COST_FLOOR_USD)
    return low, high


def _dev_after(bundle: Bundle, extended: QualityRouter, bench: Bench, X: FloatArray,
               before: dict[str, Any]) -> dict[str, Any]:
    """The dev split's decisions with the new model: edge share and estimated cost per
    request (neither needs the new model's dev outcomes, which are unknown); the metrics
    that need them are dropped, and the values before are kept beside."""
    dev = np.flatnonzero(bench.samples["split"].to_numpy() == "dev")
    if not len(dev):
        return {"before_added_models": before}
    scenario = bundle.scenario
    preds = extended.predictions_for(X[dev], scenario)
    choice = extended.decide(preds, scenario)
    tiers = np.array(extended.tiers_, dtype=object)
    cost = extended.mean_cost_["usd"][choice]
    return {"edge_share": float((tiers[choice] == "edge").mean()),
            "avg_cost_per_10k": float(cost.mean() * 1e4), "n": len(dev),
            "estimated_from": "each chosen model's mean cost (the new model's dev outcomes "
                              "are unknown)",
            "before_added_models": before}
