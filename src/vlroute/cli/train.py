"""``vlroute train``: fit one router on a bench's train split and save it as an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vlroute._typing import FloatArray
from vlroute.cli._ui import console
from vlroute.cli.evaluate import parse_params
from vlroute.data import load_bench
from vlroute.data.bench import Bench
from vlroute.evaluation.calibrate import Target, calibrate
from vlroute.evaluation.runner import tune_cost_weight
from vlroute.features.store import feature_matrix
from vlroute.metrics import cost_bounds
from vlroute.routers import ROUTERS, make_router
from vlroute.routers.persistence import save_router
from vlroute.routers.policy import PolicyRouter
from vlroute.routers.quality import QualityRouter
from vlroute.scenarios import TUNED, Scenario, parse_scenario


@click.command("train")
@click.argument("router_name", metavar="ROUTER")
@click.argument("directory", type=click.Path(exists=True, path_type=Path))
@click.option("--param", "params", multiple=True, help="KEY=VALUE constructor parameter.")
@click.option("--features", "feature_names", default="minilm,efficientnet-lite0",
              show_default=True, help="Stored features TEXT,IMAGE (either may be 'none').")
@click.option("--scenario", default=TUNED, show_default=True,
              help="Scenario saved with the artifact; cost_weight@dev picks the cost_weight "
                   "on the dev split by Rank Score.")
@click.option("--target", default=None,
              help="Calibrate the scenario on dev to a target: cost_per_request<=USD, "
                   "edge_share>=SHARE or apsp_drop<=FRACTION.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Artifact folder (router.json + arrays.npz).")
@click.option("--overwrite", is_flag=True, help="Replace an existing artifact.")
def train(router_name: str, directory: Path, params: tuple[str, ...], feature_names: str,
          scenario: str, target: str | None, out: Path, overwrite: bool) -> None:
    """Fit ROUTER on the train split of the bench in DIRECTORY and save it to --out."""
    router_params = parse_params(tuple(f"{router_name}.{p}" for p in params)).get(
        router_name, {})
    cls = ROUTERS.get(router_name)
    bench = load_bench(directory)
    X, spec = None, None
    if cls.needs_features:
        text, _, image = feature_names.partition(",")
        X, spec = feature_matrix(bench, None if text in ("", "none") else text,
                                 None if image in ("", "none") else image)
    info = fit_and_save(router_name, router_params, bench, X, spec, scenario, out,
                        overwrite=overwrite, target=target)
    console.print(f"Saved {router_name} to {out} (trained on {info['n_train']} samples; "
                  f"scenario {info['scenario_name']}: {info['scenario']}).")


def fit_and_save(  # noqa: PLR0913 - what an artifact is made of
        name: str, params: dict[str, Any], bench: Bench, X: FloatArray | None,
        feature_spec: dict[str, Any] | None, scenario: str, out: Path, *,
        overwrite: bool = False, target: str | None = None) -> dict[str, Any]:
    """Fit ``name`` on the train split, settle its scenario on dev (``cost_weight@dev``
    tuning or a calibration ``target``; a policy router keeps the trade-off it was trained
    for), and save the artifact to ``out``; returns the artifact's ``info``."""
    m = bench.matrices()
    bounds = cost_bounds(m.cost)
    train_rows, dev_rows = m.splits == "train", m.splits == "dev"
    router = make_router(name, **params).fit(
        m.subset(train_rows), bounds=bounds, X=None if X is None else X[train_rows])
    chosen = parse_scenario(scenario)
    if isinstance(router, PolicyRouter):
        chosen = Scenario("as_trained", cost_weight=0.0) if chosen.name == TUNED else chosen
        router.check_scenario(chosen)
    elif target and isinstance(router, QualityRouter) and X is not None:
        base = chosen if chosen.name != TUNED else parse_scenario("cost_weight=0")
        chosen, values = calibrate(router, m.subset(dev_rows), X[dev_rows],
                                   Target.parse(target), base, bounds)
        console.print(f"Calibrated on dev to {target}: {chosen.spec()} (dev edge share "
                      f"{values['edge_share']:.3f}, APSP {values['apsp']:.3f}, cost "
                      f"{values['avg_cost_per_10k']:.3f} $/10K).")
    elif chosen.name == TUNED and isinstance(router, QualityRouter) and X is not None:
        chosen = tune_cost_weight(router, m.subset(dev_rows), X[dev_rows], bounds)
    info = {"bench": bench.name, "source_digest": bench.manifest.get("source_digest"),
            "trained_on": "train", "n_train": int(train_rows.sum()),
            "scenario": chosen.spec(), "scenario_name": chosen.name,
            "cost_bounds_usd": list(bounds)}
    save_router(router, out, feature_spec=feature_spec, overwrite=overwrite, info=info)
    return info
