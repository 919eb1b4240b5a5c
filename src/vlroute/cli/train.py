"""``vlroute train``: fit one router on a bench's train split and save it as a serving bundle
(see :mod:`vlroute.evaluation.bundles`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vlroute.cli._ui import console, fmt
from vlroute.cli.evaluate import parse_params
from vlroute.data import load_bench
from vlroute.evaluation.bundles import save_bundle, train_bundle
from vlroute.features.store import feature_matrix
from vlroute.features.tokens import load_tokens
from vlroute.routers import ROUTERS
from vlroute.scenarios import TUNED


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
@click.option("--models", default=None, help="Comma-separated models to route among "
              "(default: the bench's candidates), e.g. an edge/cloud pair.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Bundle folder (router.json + arrays.npz).")
@click.option("--labels", type=click.Choice(["sample", "group_mean"]), default="sample",
              show_default=True, help="Train on per-sample labels or on each training "
                                      "group's mean quality per model (auto tries both).")
@click.option("--overwrite", is_flag=True, help="Replace an existing artifact.")
def train(  # noqa: PLR0913 - one parameter per CLI option
        router_name: str, directory: Path, params: tuple[str, ...], feature_names: str,
          scenario: str, target: str | None, models: str | None, out: Path,
          labels: str, overwrite: bool) -> None:
    """Fit ROUTER on the train split of the bench in DIRECTORY and save it to --out as a
    serving bundle. ROUTER `auto` chooses the family, labels and cost_weight on dev."""
    router_params = parse_params(tuple(f"{router_name}.{p}" for p in params)).get(
        router_name, {})
    needs_features = router_name == "auto" or ROUTERS.get(router_name).needs_features
    bench = load_bench(directory)
    text, _, image = feature_names.partition(",")
    names = (None if text in ("", "none") else text, None if image in ("", "none") else image)
    X: Any = None
    spec: dict[str, Any] | None = None
    if getattr(ROUTERS.get(router_name), "needs_tokens", False) if router_name != "auto" \
            else False:
        X, spec = load_tokens(bench)            # end-to-end routers read token features
    elif needs_features:
        X, spec = feature_matrix(bench, *names)
    trained = train_bundle(bench, router_name, router_params, X, spec, scenario=scenario,
                           target=target, feature_names=names,
                           models=tuple(m.strip() for m in models.split(",") if m.strip())
                           if models else None, labels=labels)
    save_bundle(trained, out, overwrite=overwrite)
    dev = trained.dev
    if target:
        console.print(f"Calibrated on dev to {target}: {trained.info['scenario']} (dev edge "
                      f"share {fmt(dev['edge_share'], 3)}, APSP {fmt(dev['apsp'], 3)}, cost "
                      f"{fmt(dev['avg_cost_per_10k'], 3)} $/10K).")
    console.print(f"Saved {router_name} to {out} (trained on {trained.info['n_train']} "
                  f"samples; scenario {trained.info['scenario_name']}: "
                  f"{trained.info['scenario']}; dev: Rank Score {fmt(dev['rank_score'], 2)}, "
                  f"gap closed {fmt(dev['gap_closed'], 3)}, edge share "
                  f"{fmt(dev['edge_share'], 3)}).")
