"""``vlroute demo``: the whole job on the embedded DynaMath subset."""

from __future__ import annotations

from pathlib import Path

import click

from vlroute.cli._ui import console, steps, table
from vlroute.cli.evaluate import COLUMNS, results_table
from vlroute.data import READERS, build_bench
from vlroute.data.validate import validate_bench
from vlroute.demo_data import demo_set_path
from vlroute.evaluation import EvalSpec, evaluate_bench, save_results
from vlroute.scenarios import PRESETS


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-out"),
              show_default=True, help="Where the bench and results are written.")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(1, 20))
def demo(out: Path, seeds: int) -> None:
    """Build the embedded DynaMath bench, validate it and evaluate the baselines.

    Writes OUT/bench (the bench) and OUT/results.json (vlroute-results/1).
    """
    src = demo_set_path()
    with steps("demo", 4) as note:
        note("build bench")
        bench = build_bench(READERS.get("jsonl")(src, out / ".staging"), out / "bench",
                            overwrite=True)
        note("validate")
        report = validate_bench(bench)
        note("evaluate")
        spec = EvalSpec(scenarios=tuple(PRESETS.values()), seeds=seeds)
        doc = evaluate_bench(bench, spec)
        note("write results")
        save_results(doc, out / "results.json")
    console.print(f"Bench {out / 'bench'}: {len(bench.samples)} samples x {len(bench.models)} "
                  f"models; validation: {len(report.errors)} error(s), "
                  f"{len(report.warnings)} warning(s).")
    console.print(table("DynaMath demo: training-free baselines, test split, mean over "
                        f"{seeds} grouped splits (cost, latency, energy estimated)",
                        COLUMNS, results_table(doc, with_singles=False)))
    console.print(f"Results: {out / 'results.json'}")
    if not report.ok:
        raise click.ClickException("the demo bench failed validation: "
                                   + "; ".join(report.errors))
