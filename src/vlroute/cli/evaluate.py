"""``vlroute eval`` and ``vlroute routers``."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Any

import click
import orjson

from vlroute._io import write_json_atomic, write_text_atomic
from vlroute.cli._ui import console, fmt, ray_option, steps, table
from vlroute.data import load_bench
from vlroute.data.bench import Bench
from vlroute.errors import ParameterError, VlrouteError
from vlroute.evaluation import EvalSpec, evaluate_bench, flat_rows, save_results
from vlroute.evaluation.bundles import decision_rows, score_split
from vlroute.evaluation.calibrate import Target
from vlroute.evaluation.runner import plan_jobs, router_names
from vlroute.features.store import feature_matrix
from vlroute.features.tokens import load_tokens
from vlroute.routers import BASELINES, E2E, LEARNED, ROUTERS, check_params
from vlroute.routers.bundle import load_bundle
from vlroute.routers.persistence import artifact_metadata
from vlroute.scenarios import TUNED, parse_scenario


def parse_params(items: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``ROUTER.KEY=VALUE`` strings as {router: {key: value}}; values are Python literals
    (also ``true``, ``false``, ``inf``), else strings. Each is checked against the router's
    constructor (:func:`vlroute.routers.check_params`): an unknown router or parameter, or a
    refused value, is an error naming the ``--param`` item."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, text = item.partition("=")
        router, dot, key = target.partition(".")
        if not (sep and dot and router and key):
            raise click.BadParameter(f"{item!r}: expected ROUTER.KEY=VALUE, e.g. "
                                     "knn.n_neighbors=30", param_hint="'--param'")
        value = _literal(text)
        try:
            check_params(router, {key: value})
        except VlrouteError as exc:
            raise ParameterError(f"--param {item}: {exc}") from exc
        out.setdefault(router, {})[key] = value
    return out


def _literal(text: str) -> Any:
    words = {"true": True, "false": False, "inf": math.inf, "+inf": math.inf,
             "-inf": -math.inf}
    if text.strip().lower() in words:
        return words[text.strip().lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _router_names(text: str, models: list[str]) -> tuple[list[str], bool]:
    names: list[str] = []
    singles = False
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part in ("baselines", "all"):
            names.extend(BASELINES)
            if part == "all":
                names.extend(LEARNED)
        elif part == "e2e":          # opt-in: each trains a transformer on token features
            names.extend(E2E)
        elif part == "singles":
            singles = True
        elif part == "auto":
            names.append(part)
        else:
            if not part.startswith("single:"):
                ROUTERS.get(part)  # did-you-mean error for typos
            names.append(part)
    if not names and not singles:
        raise click.BadParameter("no routers named; use e.g. 'baselines' or 'oracle,random'.")
    return list(dict.fromkeys(names)), singles


def _reads_tokens(name: str) -> bool:
    """Whether router ``name`` reads token features (the end-to-end routers)."""
    return bool(getattr(ROUTERS.get(name), "needs_tokens", False))


def _has_features(bench: Bench, names: tuple[str | None, str | None]) -> bool:
    """Whether the bench stores every named feature (text and image; at least one)."""
    index = bench.root / "features" / "index.json"
    if not index.is_file() or not any(names):
        return False
    try:
        have = json.loads(index.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return all(n in have for n in names if n)


def results_table(doc: dict[str, Any], with_singles: bool) -> list[list[str]]:
    """Table rows of the aggregate results (mean over seeds, +- std when several seeds)."""
    def pm(row: dict[str, Any], key: str, digits: int) -> str:
        std = row.get(f"{key}_std")
        text = fmt(row.get(key), digits)
        return f"{text}±{fmt(std, digits)}" if row.get("n_seeds", 1) > 1 and std else text

    rows = [[r["router"], r["scenario"], r["split"], pm(r, "avg_acc", 3),
             pm(r, "avg_cost_per_10k", 3), pm(r, "rank_score", 2), fmt(r.get("gap_closed"), 3),
             fmt(r.get("apsp"), 3), fmt(r.get("edge_share"), 3), fmt(r.get("rcs"), 3)]
            for r in flat_rows(doc)]
    if with_singles:
        rows += [[f"single:{r['model']}", r["scenario"], r["split"], pm(r, "avg_acc", 3),
                  pm(r, "avg_cost_per_10k", 3), pm(r, "rank_score", 2),
                  fmt(r.get("gap_closed"), 3), fmt(r.get("apsp"), 3),
                  fmt(r.get("edge_share"), 3), fmt(r.get("rcs"), 3)]
                 for r in doc["singles"]]
    return rows


COLUMNS = ["router", "scenario", "split", "avg acc", "$/10K", "rank score", "gap closed",
           "APSP", "edge share", "RCS"]


@click.command("eval")
@click.argument("directory", type=click.Path(exists=True, path_type=Path))
@click.option("--routers", "router_text", default=None,
              help="Comma-separated router names; 'auto' = the router chosen on dev "
                   "(family, labels, cost_weight; a single model when routing does not pay), "
                   "'baselines' = every training-free baseline, 'singles' = one row per "
                   "model, 'e2e' = the end-to-end routers on token features (vlroute "
                   "features --tokens; not part of 'all'). Default: auto when the bench has "
                   "the --features, else baselines.")
@click.option("--scenario", "scenarios", multiple=True, default=(TUNED,),
              show_default=True, help="Preset or inline spec; repeat for several. "
                                      "cost_weight@dev: each learned router's cost_weight "
                                      "chosen on dev by Rank Score.")
@click.option("--protocol", type=click.Choice(["grouped", "random"]), default="grouped",
              show_default=True, help="grouped: splits keep a question's variants together; "
                                      "random: VL-RouterBench's per-sample 70/10/20 splits, "
                                      "where they fall on both sides (leakage included).")
@click.option("--target", default=None,
              help="Calibrate each quality router's scenario knob (tau or cost_weight) on dev "
                   "to a target, per seed: apsp_drop<=FRACTION, edge_share>=SHARE or "
                   "cost_per_request<=USD; test rows then carry edge_share and apsp_drop.")
@click.option("--hints", type=click.Choice(["none", "task"]), default="none",
              show_default=True, help="task: also report each router that reads a task hint "
                                      "(prior, blend; auto when it chose one) as ROUTER+task, "
                                      "given the bench's task as a client would send it in "
                                      "x-vlroute-task.")
@click.option("--labels", type=click.Choice(["sample", "group_mean"]), default="sample",
              show_default=True, help="What learned routers train on: per-sample labels or "
                                      "each training group's mean quality per model.")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(1, 100),
              help="Repeat over N grouped splits (the bench's seed, then seed+1, ...).")
@click.option("--split", "splits", multiple=True, default=("test",), show_default=True,
              type=click.Choice(["test", "dev"]), help="Split(s) to report.")
@click.option("--models", default=None, help="Comma-separated candidate models.")
@click.option("--all-models", is_flag=True, help="Include text-only and baseline models.")
@click.option("--features", "feature_names", default="minilm,efficientnet-lite0",
              show_default=True, help="Stored features for learned routers: TEXT,IMAGE "
                                      "(either may be 'none').")
@click.option("--param", "params", multiple=True,
              help="Router parameter ROUTER.KEY=VALUE, e.g. knn.n_neighbors=30.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Write the flat rows (mean over seeds, with *_std) as JSON.")
@click.option("--results", "results_out", type=click.Path(path_type=Path), default=None,
              help="Write the full vlroute-results/2 document.")
@click.option("--artifact", type=click.Path(path_type=Path), default=None,
              help="Score a saved serving bundle (vlroute train / demo) on the bench's split "
                   "instead of fitting routers: the decisions the gateway serves.")
@click.option("--decisions", "decisions_out", type=click.Path(path_type=Path), default=None,
              help="With --artifact: write each sample's choice, per-model scores and "
                   "decision margin as JSON lines.")
@ray_option("Run the (seed x router) jobs as Ray tasks (the same document as a local run "
            "but for timings)")
def eval_command(  # noqa: PLR0913 - one parameter per CLI option
        directory: Path, router_text: str | None, scenarios: tuple[str, ...], protocol: str,
                 target: str | None, hints: str, labels: str,
                 seeds: int, splits: tuple[str, ...], models: str | None, all_models: bool,
                 feature_names: str, params: tuple[str, ...], json_out: Path | None,
                 results_out: Path | None, artifact: Path | None,
                 decisions_out: Path | None, ray_address: str | None) -> None:
    """Evaluate routers on a bench (fitted on train, reported on test).

    Learned routers (knn, linear, gbdt) use the stored features; add the scenario
    `cost_weight@dev` to let each pick its cost_weight on dev by Rank Score. With
    --artifact, score a saved bundle as it is served.
    """
    router_params = parse_params(params)
    bench = load_bench(directory)
    if decisions_out is not None and artifact is None:
        raise click.BadParameter("--decisions needs --artifact (the bundle whose decisions "
                                 "to write).", param_hint="--decisions")
    if artifact is not None:
        if ray_address is not None:
            raise click.BadParameter("--artifact scores a bundle here; leave out --ray.",
                                     param_hint="--ray")
        _eval_artifact(bench, artifact, splits[0], feature_names, decisions_out, json_out)
        return
    text, _, image = feature_names.partition(",")
    stored = (None if text in ("", "none") else text, None if image in ("", "none") else image)
    if router_text is None:
        router_text = "auto" if _has_features(bench, stored) else "baselines"
    names, singles = _router_names(router_text, [])
    X, feature_spec, tokens = None, dict[str, Any](), None
    learned = [n for n in names if not n.startswith("single:")]
    if any(n == "auto" or (ROUTERS.get(n).needs_features and not _reads_tokens(n))
           for n in learned):
        X, feature_spec = feature_matrix(bench, *stored)
    if any(_reads_tokens(n) for n in learned if n != "auto"):
        tokens, token_spec = load_tokens(bench)
        feature_spec = {**feature_spec, "tokens": token_spec}
    if target:
        Target.parse(target)                              # fails here, before any fitting
        if scenarios == (TUNED,):
            raise click.BadParameter("--target calibrates a scenario's knob: give one, e.g. "
                                     "--scenario mes=6,edge_first=1.", param_hint="--scenario")
        # the knob is calibrated: a scenario may leave it out (a threshold one then)
        scenarios = tuple(s if ("tau=" in s or "cost_weight=" in s or "=" not in s)
                          else f"{s},tau=0.5" for s in scenarios)
    spec = EvalSpec(routers=tuple(names), scenarios=tuple(parse_scenario(s) for s in scenarios),
                    seeds=seeds, splits=splits,
                    models=tuple(m.strip() for m in models.split(",")) if models else None,
                    all_models=all_models, features=X, feature_spec=feature_spec, tokens=tokens,
                    params=router_params, labels=labels, protocol=protocol,
                    target=target, hints=() if hints == "none" else (hints,))
    executor = None
    if ray_address is not None:
        from vlroute.evaluation.executors import RayExecutor

        executor = RayExecutor(None if ray_address == "local" else ray_address)
    total = len(plan_jobs(router_names(spec, spec.models or bench.candidate_models(
        all_models=all_models)), seeds))
    with steps("eval", total, counted="job ") as note:
        doc = evaluate_bench(bench, spec, progress=note, executor=executor)
    console.print(table(f"{bench.name}: routers (Rank Score bounds "
                        f"{fmt(doc['bench']['cost_bounds_per_10k'][0])}-"
                        f"{fmt(doc['bench']['cost_bounds_per_10k'][1])} $/10K; cost estimated)",
                        COLUMNS, results_table(doc, singles)))
    if json_out:
        write_json_atomic(json_out, flat_rows(doc))
    if results_out:
        save_results(doc, results_out)


def _eval_artifact(bench: Bench, artifact: Path, split: str, feature_names: str,
                   decisions_out: Path | None, json_out: Path | None) -> None:
    """``eval --artifact``: the bundle's decisions on one split of ``bench``."""
    meta = artifact_metadata(artifact)
    stored = (meta.get("bundle") or {}).get("feature_names")
    text, _, image = feature_names.partition(",")
    names = tuple(stored) if stored else (None if text in ("", "none") else text,
                                          None if image in ("", "none") else image)
    X: Any
    if (meta.get("feature_spec") or {}).get("kind") == "tokens":
        X, feature_spec = load_tokens(bench)            # an end-to-end router's bundle
    else:
        X, feature_spec = feature_matrix(bench, names[0], names[1])
    bundle = load_bundle(artifact, feature_spec=feature_spec)
    scored = score_split(bundle, bench.matrices(list(bundle.models)), X, split)
    refs = scored["references"]
    rows = [[f"{meta.get('router')} (bundle)", "auto", split, *_cells(scored["metrics"])],
            *[[name, "auto", split, *_cells(values)] for name, values in refs.items()]]
    console.print(table(f"{bench.name}: bundle {artifact} (scenario {bundle.scenario.spec()}, "
                        f"chosen by {bundle.section['scenario_name']}; "
                        f"{len(bundle.candidates)} candidates; cost estimated)",
                        COLUMNS, rows))
    if decisions_out:
        lines = [orjson.dumps(r).decode() for r in decision_rows(bundle, scored)]
        write_text_atomic(decisions_out, "".join(f"{line}\n" for line in lines))
        console.print(f"Decisions: {decisions_out} ({len(lines)} samples)")
    if json_out:
        write_json_atomic(json_out, [{"router": "bundle", "scenario": "auto", "split": split,
                                      "scenario_spec": bundle.scenario.spec(),
                                      **scored["metrics"]},
                                     *[{"router": k, "scenario": "auto", "split": split, **v}
                                       for k, v in refs.items()]])


def _cells(values: dict[str, Any]) -> list[str]:
    return [fmt(values.get("avg_acc"), 3), fmt(values.get("avg_cost_per_10k"), 3),
            fmt(values.get("rank_score"), 2), fmt(values.get("gap_closed"), 3),
            fmt(values.get("apsp"), 3), fmt(values.get("edge_share"), 3),
            fmt(values.get("rcs"), 3)]


@click.group("routers")
def routers() -> None:
    """Inspect the router registry."""


@routers.command("list")
def list_routers() -> None:
    """Registered routers and where they live."""
    console.print(table("routers", ["name", "origin"],
                        [[name, ROUTERS.origin(name)] for name in ROUTERS]))
