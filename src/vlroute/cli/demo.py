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
from vlroute.evaluation.bundles import save_bundle, train_bundle
from vlroute.evaluation.tau import tau_curve
from vlroute.features.registry import make_encoder
from vlroute.features.store import compute_features, feature_matrix
from vlroute.report import write_report
from vlroute.routers import BASELINES, DEFAULT_ROUTER
from vlroute.scenarios import PRESETS, TUNED, parse_scenario

DEMO_ENCODERS = ("minilm", "efficientnet-lite0")
#: the learned routers the demo compares: each trains in a few seconds per seed on the demo's
#: 1,050 train requests over 1,664 features (gbdt takes about a minute per seed there, linear
#: about ten seconds, and the label_lambda sweeps of policy routers longer: bench/routers.py
#: runs them all)
DEMO_ROUTERS = ("auto", DEFAULT_ROUTER, "mlp", "mf", "prknn")
#: what the demo's bundles hold: the router chosen on dev
BUNDLE_ROUTER = "auto"
#: the edge/cloud pair of the demo's threshold curve
DEMO_PAIR = ("Qwen2-VL-7B-Instruct", "Qwen2-VL-72B-Instruct")


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-out"),
              show_default=True, help="Where the bench and results are written.")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(1, 20))
def demo(out: Path, seeds: int) -> None:
    """Build the embedded DynaMath bench, validate it, extract features with the offline
    encoders (MiniLM text, EfficientNet-Lite0 image), evaluate the baselines and a few
    learned routers under the presets and with cost_weight chosen on dev, train the default
    router, and write the report.

    Writes OUT/bench (the bench, with OUT/bench/features), OUT/results.json, OUT/router (the
    default router's serving bundle over every model), OUT/router-qwen2-vl (the same over the
    Qwen2-VL 7B / 72B pair, which examples/gateway.yaml serves) and OUT/report.html.
    """
    src = demo_set_path()
    with steps("demo", 7) as note:
        note("build bench")
        bench = build_bench(READERS.get("jsonl")(src, out / ".staging"), out / "bench",
                            overwrite=True)
        note("validate")
        report = validate_bench(bench)
        note("features (MiniLM + EfficientNet-Lite0)")
        compute_features(bench, {name: make_encoder(name) for name in DEMO_ENCODERS})
        X, feature_spec = feature_matrix(bench, *DEMO_ENCODERS)
        note("evaluate")
        spec = EvalSpec(routers=(*BASELINES, *DEMO_ROUTERS),
                        scenarios=(*PRESETS.values(), parse_scenario(TUNED)), seeds=seeds,
                        features=X, feature_spec=feature_spec)
        doc = evaluate_bench(bench, spec)
        doc["tau_curves"].append(tau_curve(bench, X, DEMO_PAIR, seeds=seeds))
        note("write results")
        save_results(doc, out / "results.json")
        note("train auto bundles (all models; the Qwen2-VL pair)")
        bundles = {}
        for folder, models in (("router", None), ("router-qwen2-vl", DEMO_PAIR)):
            bundles[folder] = train_bundle(bench, BUNDLE_ROUTER, {}, X, feature_spec,
                                           scenario=TUNED, models=models,
                                           feature_names=DEMO_ENCODERS)
            save_bundle(bundles[folder], out / folder, overwrite=True)
        note("report")
        write_report({bench.name: doc}, out / "report.html", title="vlroute demo")
    console.print(f"Bench {out / 'bench'}: {len(bench.samples)} samples x {len(bench.models)} "
                  f"models; validation: {len(report.errors)} error(s), "
                  f"{len(report.warnings)} warning(s).")
    rows = results_table(doc, with_singles=False)
    lead = [r for r in rows if r[1] == TUNED and r[0] in ("auto", "best_single_by_rank",
                                                            "oracle")]
    console.print(table(f"DynaMath demo: is routing worth it? auto (chosen on dev) against the "
                        f"best single model and the Oracle, test split, mean over {seeds} "
                        "grouped splits (cost estimated)", COLUMNS, lead))
    console.print(table("Every router under every scenario", COLUMNS,
                        [r for r in rows if r not in lead]))
    console.print(f"Results: {out / 'results.json'}")
    for folder, trained in bundles.items():
        dev = trained.dev
        console.print(f"Bundle {out / folder} ({trained.bundle.section['router_name']} over "
                      f"{len(trained.bundle.models)} models, scenario "
                      f"{trained.info['scenario']} chosen on dev; test split: run `vlroute "
                      f"eval {out / 'bench'} --artifact {out / folder}`; dev Rank Score "
                      f"{dev['rank_score']:.2f}, edge share {dev['edge_share']:.3f})")
    console.print(f"Report: {out / 'report.html'}")
    if not report.ok:
        raise click.ClickException("the demo bench failed validation: "
                                   + "; ".join(report.errors))
