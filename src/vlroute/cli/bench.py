"""``vlroute bench build | validate | describe``."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import numpy as np

from vlroute._io import write_json_atomic
from vlroute.cli._ui import console, fmt, steps, table
from vlroute.costs import Catalog
from vlroute.data import READERS, SplitSpec, build_bench, load_bench
from vlroute.data.bench import Bench
from vlroute.data.matrices import column_means
from vlroute.data.validate import validate_bench
from vlroute.metrics import oracle_decisions


@click.group()
def bench() -> None:
    """Build, check and describe routing benches."""


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected three numbers such as 0.7,0.1,0.2") \
            from None
    if len(parts) != 3:
        raise click.BadParameter(f"{text!r}: expected three numbers (train,dev,test)")
    return parts[0], parts[1], parts[2]


@bench.command("build")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--reader", "reader_name", default="jsonl", show_default=True,
              help="Source format: jsonl, vlmevalkit, lmms_eval, csv or parquet.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Bench directory to write (written atomically).")
@click.option("--seed", default=42, show_default=True, help="Split seed.")
@click.option("--split", "fractions", default="0.7,0.1,0.2", show_default=True,
              help="Train,dev,test fractions.")
@click.option("--stratify/--no-stratify", default=False, help="Stratify the split by dataset.")
@click.option("--costs", type=click.Path(exists=True, path_type=Path), default=None,
              help="YAML overriding entries of the default cost catalog.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bench at --out.")
@click.option("--repeats", type=click.Choice(["error", "mean"]), default=None,
              help="Several outcomes of one model on one sample: refuse them (error; the "
                   "default unless set.json says \"repeats\") or learn their mean (a success "
                   "rate for 0/1 outcomes).")
def build(src: Path, reader_name: str, out: Path, seed: int,  # noqa: PLR0913 - CLI options
          fractions: str, stratify: bool, costs: Path | None, overwrite: bool,
          repeats: str | None) -> None:
    """Build a bench from SRC (a set folder, a run directory or a file)."""
    train, dev, test = _fractions(fractions)
    reader = READERS.get(reader_name)
    if costs is None and (src / "costs.yaml").is_file():
        costs = src / "costs.yaml"          # a collected run's backend prices and tiers
        console.print(f"Using {costs} (the prices and tiers the set was collected with) "
                      "over the default catalog.")
    catalog = Catalog.load(costs)
    with steps("build", 6) as note:
        note("reading")
        staging = out.parent / f".{out.name}.reader"
        try:
            tables = reader(src, staging)
            result = build_bench(tables, out, catalog=catalog, overwrite=overwrite,
                                 split=SplitSpec(seed=seed, train=train, dev=dev, test=test,
                                                 stratify=stratify), progress=note,
                                 repeats=repeats)
        finally:
            _remove_tree(staging)
    for line in result.manifest.get("reader_report") or tables.report:
        console.print(f"  {line}")
    counts = result.manifest["counts"]
    console.print(f"Built {out}: {counts['samples']} samples x {counts['models']} models, "
                  f"{counts['records']} records, {counts['images']} images; split "
                  f"{result.manifest['split']['sizes']}.")


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@bench.command("validate")
@click.argument("directory", type=click.Path(exists=True, path_type=Path))
@click.option("--decode-images", is_flag=True, help="Decode every image fully (slower).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the report as JSON.")
def validate(directory: Path, decode_images: bool, json_out: Path | None) -> None:
    """Check a bench; exit non-zero on errors only (warnings are reported)."""
    report = validate_bench(load_bench(directory, verify=True), decode_images=decode_images)
    for error in report.errors:
        console.print(f"[red]error[/red]   {error}")
    for warning in report.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}")
    stats = report.stats
    console.print(f"{stats['samples']} samples, {stats['models']} models, {stats['images']} "
                  f"images, missing pairs {stats.get('missing_pairs', '-')}, split "
                  f"{stats.get('split_sizes', {})}: {len(report.errors)} error(s), "
                  f"{len(report.warnings)} warning(s).")
    if json_out:
        write_json_atomic(json_out, report.to_dict())
    if not report.ok:
        raise click.exceptions.Exit(1)


def describe_rows(b: Bench, all_models: bool) -> tuple[list[list[str]], dict[str, float]]:
    """Per-model table rows and the oracle / best-single summary."""
    m = b.matrices(all_models=all_models)
    info = b.models.set_index("model")
    q, c = column_means(m.quality), column_means(m.cost) * 1e4
    tin, tout = column_means(m.tokens_in), column_means(m.tokens_out)
    rows = [[name, str(info.at[name, "tier"]), fmt(float(q[k])), fmt(float(c[k])),
             fmt(float(tin[k]), 0), fmt(float(tout[k]), 0), str(info.at[name, "price_status"])]
            for k, name in enumerate(m.models)]
    rows.sort(key=lambda r: -float(r[2]) if r[2] != "-" else 0.0)
    oracle = oracle_decisions(m.quality, m.cost)
    picked = m.quality[np.arange(m.n_samples), oracle]
    summary = {"oracle": float(np.nanmean(picked)),
               "oracle_cost_per_10k": float(np.nanmean(m.cost[np.arange(m.n_samples), oracle]))
               * 1e4,
               "best_single": float(np.nanmax(q))}
    return rows, summary


def _source(estimated: int, pairs: int) -> str:
    if not pairs or estimated == pairs:
        return "estimated"
    return "measured" if not estimated else f"measured {100 * (1 - estimated / pairs):.0f}%"


def economics_rows(b: Bench, models: list[str]) -> list[dict[str, object]]:
    """Per model: latency percentiles, time to first token, energy per request, and whether
    each is measured (collect, records) or estimated (the catalog). The records are read a
    row group at a time (the latencies are held: 8 bytes a record)."""
    names = [str(name) for name in b.models["model"]]
    wanted = {names.index(name) for name in models}
    quantities = ("latency_s", "energy_j", "cost_usd")
    ttft = "ttft_s" in b.record_columns()
    columns = [*quantities, *(f"{q}_estimated" for q in quantities),
               *(["ttft_s"] if ttft else [])]
    latency: dict[int, list[np.ndarray]] = {k: [] for k in wanted}
    ttfts: dict[int, list[np.ndarray]] = {k: [] for k in wanted}
    sums = {k: np.zeros(3) for k in wanted}       # energy sum, count, pairs
    estimated = {k: np.zeros(3) for k in wanted}  # estimated latency, energy, cost
    for part in b.record_parts(columns):
        model_idx = part["model_idx"]
        for k in wanted:
            rows = model_idx == k
            if not rows.any():
                continue
            latency[k].append(np.asarray(part["latency_s"][rows], dtype=float))
            if ttft:
                values = np.asarray(part["ttft_s"][rows], dtype=float)
                ttfts[k].append(values[np.isfinite(values)])
            energy = np.asarray(part["energy_j"][rows], dtype=float)
            sums[k] += (np.nansum(energy), np.count_nonzero(~np.isnan(energy)), rows.sum())
            estimated[k] += [np.count_nonzero(part[f"{q}_estimated"][rows])
                             for q in quantities]
    out: list[dict[str, object]] = []
    for name in models:
        k = names.index(name)
        lat = np.concatenate(latency[k]) if latency[k] else np.zeros(0)
        tt = np.concatenate(ttfts[k]) if ttfts[k] else np.zeros(0)
        p50, p90, p99 = (np.percentile(lat, [50, 90, 99]) if len(lat)
                         else (np.nan, np.nan, np.nan))
        energy_sum, energy_n, pairs = sums[k]
        out.append({"model": name, "latency_p50": float(p50), "latency_p90": float(p90),
                    "latency_p99": float(p99),
                    "ttft_p50": float(np.median(tt)) if len(tt) else None,
                    "energy_mean": float(energy_sum / energy_n) if energy_n else None,
                    **{f"{q}_source": _source(int(estimated[k][j]), int(pairs))
                       for j, q in enumerate(("latency", "energy", "cost"))}})
    return out


@bench.command("describe")
@click.argument("directory", type=click.Path(exists=True, path_type=Path))
@click.option("--all-models", is_flag=True,
              help="Include text-only and baseline models (default: vision-language only).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
def describe(directory: Path, all_models: bool, json_out: Path | None) -> None:
    """Per-model mean quality, cost ($ per 10K requests), tokens, and the Oracle."""
    b = load_bench(directory)
    rows, summary = describe_rows(b, all_models)
    console.print(table(f"{b.name}: {len(b.samples)} samples ({b.label} labels)",
                        ["model", "tier", "quality", "$/10K", "tokens in", "tokens out",
                         "price"], rows))
    economics = economics_rows(b, [r[0] for r in rows])
    console.print(table("latency, time to first token and energy: measured or estimated",
                        ["model", "latency p50 s", "p90 s", "p99 s", "ttft p50 s",
                         "J / request", "latency", "energy", "cost"],
                        [[e["model"], fmt(e["latency_p50"]), fmt(e["latency_p90"]),
                          fmt(e["latency_p99"]), fmt(e["ttft_p50"]), fmt(e["energy_mean"], 1),
                          e["latency_source"], e["energy_source"], e["cost_source"]]
                         for e in economics]))
    share = {q: 1 - float(v) for q, v in b.manifest["economics"]["estimated_share"].items()}
    measured = ", ".join(f"{q} {100 * v:.0f}%" for q, v in share.items() if v > 0)
    console.print(f"Oracle quality {summary['oracle']:.3f} at "
                  f"{summary['oracle_cost_per_10k']:.3f} $/10K; best single model "
                  f"{summary['best_single']:.3f}. "
                  + (f"Measured share of pairs: {measured}; the rest are estimates"
                     if measured else "Cost, latency and energy are estimates")
                  + f" (catalog: {b.manifest['economics']['catalog']}).")
    if json_out:
        write_json_atomic(json_out, {"bench": b.name, "summary": summary,
                                     "measured_share": share, "models": [
            {**dict(zip(["model", "tier", "quality", "cost_per_10k", "tokens_in", "tokens_out",
                         "price_status"], r, strict=True)), **e}
            for r, e in zip(rows, economics, strict=True)]})


__all__ = ["bench"]
