"""One turn of the loop: gateway traffic -> a set -> responses of every backend -> judge
scores -> bench -> features -> a retrained bundle -> reloaded into the running gateway; and a
drift check that says when to turn it again.

The gateway keeps prompts (``telemetry.store_prompts: true``) but not responses or images, so
a turn exports the served prompts (:func:`vlroute.serve.export.export_scored`, text only; the
same prompt served twice is one sample), collects every backend's answer to a seeded share of
them (the counterfactual answers, and the served backend's again, since its answer was not
kept), scores them with the judge, builds a bench priced at the backends' configured prices
with the measured tokens, latency and energy, computes the features the gateway's encoders
make, trains ``router`` (``auto`` by default) and, when a gateway URL is given, asks it to
reload the new bundle (``POST /admin/reload`` with an admin key).

The drift check reads the telemetry rows answered since the bundle was written and compares
their edge share and cost per request with what the bundle was calibrated to on dev
(``info.dev`` of the bundle: ``edge_share``, ``avg_cost_per_10k``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlroute._io import write_json_atomic
from vlroute.collect.judge import JudgeConfig, judge_run
from vlroute.collect.run import CollectOptions, collect
from vlroute.collect.samples import SampleSet, read_samples
from vlroute.errors import VlrouteError
from vlroute.serve.config import GatewayConfig

Note = Callable[[str], None]


class LoopError(VlrouteError):
    """A loop turn cannot go on (too little traffic, no prompts stored, a refused reload)."""


@dataclass(frozen=True)
class TurnOptions:
    """How one turn samples, trains and reloads."""

    share: float = 1.0
    seed: int = 0
    router: str = "auto"
    target: str | None = None
    min_samples: int = 20
    gateway: str | None = None
    admin_key: str | None = None
    max_tokens: int = 512
    spend_cap_usd: float | None = None


def unique_prompts(samples: SampleSet) -> SampleSet:
    """The samples with distinct questions (the first request of each prompt)."""
    seen: set[str] = set()
    kept = []
    for s in samples.samples:
        if s.question.strip() not in seen:
            seen.add(s.question.strip())
            kept.append(s)
    return SampleSet(samples.name, kept, samples.info, samples.source)


def export_traffic(config: GatewayConfig, out: Path) -> SampleSet:
    """The gateway's served prompts as a set folder ``out`` (replaced), deduplicated."""
    from vlroute.serve.export import export_scored
    from vlroute.serve.telemetry import open_store

    store = open_store(config.telemetry.url)
    try:
        counts = export_scored(store, out, include_unscored=True, overwrite=True)
    finally:
        store.close()
    if not counts["exported"]:
        raise LoopError(f"no served request with a stored prompt in {config.telemetry.url} "
                        f"({counts['no_prompt']} without one); set telemetry.store_prompts: "
                        "true and serve some traffic first.")
    return unique_prompts(read_samples(out))


def build_and_train(run: Path, work: Path, config: GatewayConfig, options: TurnOptions,
                    note: Note) -> dict[str, Any]:
    """Bench from the judged run, features from the gateway's encoders, a saved bundle."""
    from vlroute.costs import Catalog
    from vlroute.data import READERS, build_bench
    from vlroute.evaluation.bundles import save_bundle, train_bundle
    from vlroute.features.registry import make_encoder
    from vlroute.features.store import compute_features, feature_matrix

    note("bench")
    staging = work / ".reader"
    try:
        tables = READERS.get("jsonl")(run, staging)
        bench = build_bench(tables, work / "bench", catalog=Catalog.load(run / "costs.yaml"),
                            overwrite=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    note("features")
    names = (config.router.text_encoder, config.router.image_encoder)
    compute_features(bench, {n: make_encoder(n) for n in names if n})
    X, spec = feature_matrix(bench, *names)
    note("train")
    trained = train_bundle(bench, options.router, {}, X, spec, target=options.target,
                           feature_names=names)
    save_bundle(trained, work / "bundle", overwrite=True)
    return {"bench": str(work / "bench"), "bundle": str(work / "bundle"),
            "samples": len(bench.samples), "dev": trained.dev,
            "scenario": trained.info["scenario"]}


def reload_gateway(gateway: str, bundle: Path, admin_key: str | None) -> dict[str, Any]:
    """``POST /admin/reload`` of the running gateway with ``bundle``; its JSON answer."""
    import urllib.error
    import urllib.request

    body = json.dumps({"artifact": str(Path(bundle).resolve())}).encode()
    request = urllib.request.Request(f"{gateway.rstrip('/')}/admin/reload", data=body,
                                     method="POST", headers={"content-type":
                                                             "application/json"})
    if admin_key:
        request.add_header("authorization", f"Bearer {admin_key}")
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            doc: dict[str, Any] = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        raise LoopError(f"{gateway} refused the reload (HTTP {exc.code}): "
                        f"{exc.read()[:300].decode('utf-8', 'replace')}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LoopError(f"{gateway}: cannot reach the gateway to reload ({exc}).") from None
    return doc


def run_turn(config: GatewayConfig, judge: JudgeConfig, work: Path, *,
             options: TurnOptions | None = None, note: Note | None = None) -> dict[str, Any]:
    """One turn into ``work``; the turn's report, also written to ``work/turn.json``. The
    collect run in ``work/run`` is resumed, not replaced: a turn stopped half-way and run
    again makes no recorded call twice, and a later turn in the same folder keeps the
    earlier turns' samples (the bench grows); the export, bench and bundle are replaced."""
    options = options or TurnOptions()
    note = note or (lambda _step: None)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    note("export")
    samples = export_traffic(config, work / "export")
    chosen = max(1, round(len(samples.samples) * options.share))
    if chosen < options.min_samples:
        raise LoopError(f"{len(samples.samples)} distinct served prompt(s), {chosen} in the "
                        f"share; a turn needs at least {options.min_samples} to train and "
                        "choose on dev.")
    note("collect")          # into work/run: a stopped turn run again resumes its calls
    collected = collect(samples, config.backends, work / "run", options=CollectOptions(
        share=options.share, seed=options.seed, max_tokens=options.max_tokens,
        spend_cap_usd=options.spend_cap_usd))
    if collected.stopped:
        raise LoopError(f"collect stopped early: {collected.stopped}; the turn's run "
                        f"{work / 'run'} is kept: run the turn again with a higher "
                        "--spend-cap to go on.")
    note("judge")
    judged = judge_run(work / "run", judge)
    report: dict[str, Any] = {
        "schema": "vlroute-loop-turn/1", "prompts": len(samples.samples),
        "collected": {"made": collected.made, "failed": collected.failed,
                      "spent_usd": collected.spent_usd},
        "judged": {"scored": judged.scored, "unscored": judged.unscored,
                   "judge": judge.judge.model}}
    report.update(build_and_train(work / "run", work, config, options, note))
    if options.gateway:
        note("reload")
        report["reload"] = reload_gateway(options.gateway, work / "bundle", options.admin_key)
    write_json_atomic(work / "turn.json", report)
    return report


def drift(config: GatewayConfig, bundle: Path, *, last: int = 200, edge_tolerance: float = 0.1,
          cost_tolerance: float = 0.25, min_requests: int = 20) -> dict[str, Any]:
    """Live edge share and cost per request (the last ``last`` answered requests since the
    bundle was written) against the bundle's dev calibration; ``retrain`` says whether they
    are further apart than the tolerances (absolute for the share, relative for the cost)."""
    from vlroute.serve.telemetry import open_store

    doc = json.loads((Path(bundle) / "router.json").read_text("utf-8"))
    dev = (doc.get("info") or {}).get("dev") or {}
    if "edge_share" not in dev:
        raise LoopError(f"{bundle}: the bundle has no dev calibration (info.dev.edge_share).")
    since = (Path(bundle) / "router.json").stat().st_mtime
    tiers = {b.name: b.tier for b in config.backends}
    store = open_store(config.telemetry.url)
    try:
        rows = [r for r in store.rows() if r["status"] == 200 and r["chosen"]
                and r["ts"] >= since][-last:]
    finally:
        store.close()
    out: dict[str, Any] = {"bundle": str(bundle), "requests": len(rows),
                           "target": {"edge_share": dev.get("edge_share"),
                                      "cost_per_request": _per_request(dev)}}
    if len(rows) < min_requests:
        return {**out, "retrain": False, "reasons": [
            f"only {len(rows)} answered request(s) since the bundle; waiting for "
            f"{min_requests}"]}
    live_edge = sum(tiers.get(r["chosen"]) == "edge" for r in rows) / len(rows)
    live_cost = sum(float(r["cost_usd"] or 0.0) for r in rows) / len(rows)
    out["live"] = {"edge_share": live_edge, "cost_per_request": live_cost}
    reasons = []
    if abs(live_edge - float(dev["edge_share"])) > edge_tolerance:
        reasons.append(f"edge share {live_edge:.3f} live vs {dev['edge_share']:.3f} on dev "
                       f"(tolerance {edge_tolerance:g})")
    target_cost = out["target"]["cost_per_request"]
    if target_cost is not None and abs(live_cost - target_cost) > cost_tolerance * max(
            target_cost, 1e-9):
        reasons.append(f"cost per request ${live_cost:.3g} live vs ${target_cost:.3g} on dev "
                       f"(tolerance {100 * cost_tolerance:g}%)")
    return {**out, "retrain": bool(reasons), "reasons": reasons}


def _per_request(dev: dict[str, Any]) -> float | None:
    value = dev.get("avg_cost_per_10k")
    return None if value is None else float(value) / 1e4


__all__ = ["LoopError", "TurnOptions", "build_and_train", "drift", "export_traffic",
           "reload_gateway", "run_turn", "unique_prompts"]
