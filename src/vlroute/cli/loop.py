"""``vlroute loop run | drift``: one turn of traffic -> collect -> judge -> bench -> train ->
reload, and the check that says when to turn it again."""

from __future__ import annotations

import os
from pathlib import Path

import click

from vlroute.cli._ui import console, fmt, steps

_CONFIG = click.option("--config", "config_path", required=True, type=click.Path(
    exists=True, dir_okay=False, path_type=Path), help="The running gateway's YAML config.")


@click.group("loop")
def loop() -> None:
    """Retrain the gateway's router on its own traffic, and check when to."""


@loop.command("run")
@_CONFIG
@click.option("--judge", "judge_path", required=True, type=click.Path(
    exists=True, dir_okay=False, path_type=Path), help="Judge YAML (see `vlroute judge run`).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of this turn: export, run, bench, bundle, turn.json.")
@click.option("--gateway", default=None, help="The gateway's URL (http://host:port): reload "
              "the new bundle there. Without it the bundle is only written.")
@click.option("--admin-key-env", default="VLROUTE_ADMIN_KEY", show_default=True,
              help="Environment variable holding an admin key of the gateway.")
@click.option("--share", default=1.0, show_default=True,
              type=click.FloatRange(0, 1, min_open=True), help="Share of the served prompts "
              "to collect every backend's answer for.")
@click.option("--seed", default=0, show_default=True)
@click.option("--router", default="auto", show_default=True)
@click.option("--target", default=None, help="Calibrate to a target (edge_share>=0.8, ...).")
@click.option("--min-samples", default=20, show_default=True, type=click.IntRange(2))
@click.option("--spend-cap", "spend_cap", default=None, type=click.FloatRange(0),
              metavar="USD", help="Passed to collect: stop making calls before the turn's "
              "collect run has spent this (all its runs); the turn then stops before judging.")
def run_command(  # noqa: PLR0913 - one parameter per CLI option
        config_path: Path, judge_path: Path, work: Path, gateway: str | None,
        admin_key_env: str, share: float, seed: int, router: str, target: str | None,
        min_samples: int, spend_cap: float | None) -> None:
    """One turn: export the gateway's prompts, collect every backend's answer, judge, build
    a bench, train and reload."""
    from vlroute.collect.judge import load_judge_config
    from vlroute.collect.loop import TurnOptions, run_turn
    from vlroute.serve.config import load_config

    config, judge = load_config(config_path), load_judge_config(judge_path)
    options = TurnOptions(share=share, seed=seed, router=router, target=target,
                          min_samples=min_samples, gateway=gateway,
                          admin_key=os.environ.get(admin_key_env) or None,
                          spend_cap_usd=spend_cap)
    with steps("loop", 7) as note:
        report = run_turn(config, judge, work, options=options, note=note)
    dev = report["dev"]
    console.print(f"{report['prompts']} distinct prompt(s); {report['collected']['made']} "
                  f"call(s) collected, {report['judged']['scored']} scored; trained "
                  f"{router} on {report['samples']} samples ({report['scenario']}): dev edge "
                  f"share {fmt(dev.get('edge_share'))}, {fmt(dev.get('avg_cost_per_10k'))} "
                  f"$/10K. Bundle {report['bundle']}"
                  + (f", reloaded into {gateway}." if gateway else " (not reloaded)."))


@loop.command("drift")
@_CONFIG
@click.option("--bundle", required=True, type=click.Path(exists=True, file_okay=False,
                                                         path_type=Path))
@click.option("--last", default=200, show_default=True, type=click.IntRange(1))
@click.option("--edge-tolerance", default=0.1, show_default=True, type=click.FloatRange(0, 1))
@click.option("--cost-tolerance", default=0.25, show_default=True, type=click.FloatRange(0))
@click.option("--min-requests", default=20, show_default=True, type=click.IntRange(1))
def drift_command(config_path: Path, bundle: Path, last: int, edge_tolerance: float,
                  cost_tolerance: float, min_requests: int) -> None:
    """Compare the live edge share and cost per request since BUNDLE was written with its dev
    calibration; exit 3 when it is time to retrain."""
    from vlroute.collect.loop import drift
    from vlroute.serve.config import load_config

    doc = drift(load_config(config_path), bundle, last=last, edge_tolerance=edge_tolerance,
                cost_tolerance=cost_tolerance, min_requests=min_requests)
    live = doc.get("live") or {}
    console.print(f"{doc['requests']} request(s) since the bundle: edge share "
                  f"{fmt(live.get('edge_share'))} (dev {fmt(doc['target']['edge_share'])}), "
                  f"$ / request {fmt(live.get('cost_per_request'), 6)} (dev "
                  f"{fmt(doc['target']['cost_per_request'], 6)}).")
    if doc["retrain"]:
        console.print(f"[yellow]Retrain: {'; '.join(doc['reasons'])}.[/yellow]")
        raise click.exceptions.Exit(3)
    console.print("No retrain needed" + (f" ({doc['reasons'][0]})." if doc["reasons"]
                                         else "."))
