"""``vlroute models add``: a new model for a serving bundle without retraining."""

from __future__ import annotations

from pathlib import Path

import click

from vlroute.cli._ui import console, fmt
from vlroute.data import load_bench
from vlroute.evaluation.newmodel import TIERS, NewModel, extend_bundle


@click.group("models")
def models() -> None:
    """Change the models a serving bundle routes to."""


def _prices(text: str) -> tuple[float, float]:
    try:
        price_in, price_out = (float(p) for p in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected IN,OUT in USD per 1M tokens, e.g. "
                                 "0.15,0.6.", param_hint="--price") from None
    return price_in, price_out


@models.command("add")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("name")
@click.option("--outcomes", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The new model's outcomes (jsonl: sample_id, score in "
                                  "[0, 1]; optional tokens_in, tokens_out, latency_s).")
@click.option("--bench", "bench_dir", type=click.Path(exists=True, file_okay=False,
                                                      path_type=Path), required=True,
              help="Bench holding those samples, with the bundle's features stored.")
@click.option("--price", required=True, help="IN,OUT: USD per 1M input / output tokens.")
@click.option("--tier", type=click.Choice(TIERS), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder of the new bundle (the old one is left as it is).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def add(bundle: Path, name: str, outcomes: Path, bench_dir: Path, price: str,
        tier: str, out: Path, overwrite: bool) -> None:
    """Add model NAME to the irt or mf BUNDLE from a few labelled samples: only the new
    model's weights are fitted; its costs, the cost bounds and the candidates are updated
    and recorded in the new bundle."""
    price_in, price_out = _prices(price)
    record = extend_bundle(bundle, NewModel(name, price_in, price_out, tier), outcomes,
                           load_bench(bench_dir), out, overwrite=overwrite)
    cost = record["mean_cost"]
    console.print(f"Added {name} ({tier}) from {record['n_labelled']} labelled samples "
                  f"(mean quality {fmt(record['mean_quality'], 3)}; "
                  f"${fmt(cost['usd'] * 1e4, 3)} per 10K requests, tokens "
                  f"{record['cost_from']['tokens_in']}); saved to {out}.")
