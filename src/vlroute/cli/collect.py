"""``vlroute collect``: responses of every backend to every sample of a set, measured."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vlroute.cli._ui import console, err_console, fmt, table


@contextlib.contextmanager
def progress_bar(title: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar with ETA on stderr; yields ``update(done, total)``."""
    bar = Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=err_console,
                   transient=True)
    with bar:
        task = bar.add_task(title, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def backends_of(config: Path, only: str | None) -> tuple[list[Any], tuple[str, ...] | None]:
    """The backends of a gateway config, and the ``only`` ones named (comma-separated)."""
    from vlroute.serve.config import load_config

    backends = list(load_config(config).backends)
    if not only:
        return backends, None
    names = tuple(n.strip() for n in only.split(",") if n.strip())
    known = [b.name for b in backends]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown backend {unknown[0]!r}; the config has "
                                 f"{', '.join(known)}.", param_hint="--only")
    return backends, names


@click.command("collect")
@click.argument("source", metavar="SET", type=click.Path(exists=True, file_okay=False,
                                                         path_type=Path))
@click.option("--backends", "config", required=True, type=click.Path(
    exists=True, dir_okay=False, path_type=Path), help="Gateway-style YAML: its backends "
    "(base_url, model, prices, max_concurrency, timeout_s, power_w) are called.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder (created; an existing one is resumed).")
@click.option("--only", default=None, help="Comma-separated backend names (default: all).")
@click.option("--max-tokens", default=512, show_default=True, type=click.IntRange(1))
@click.option("--stream/--no-stream", default=True, show_default=True,
              help="Stream answers (measures time to first token).")
@click.option("--spend-cap", "spend_cap", default=None, type=click.FloatRange(0),
              metavar="USD", help="Stop making calls before the run's spend passes this.")
@click.option("--concurrency", default=None, type=click.IntRange(1), help="Calls in flight "
              "per backend (default: each backend's max_concurrency).")
@click.option("--retries", default=4, show_default=True, type=click.IntRange(0, 20),
              help="More attempts after a 429, 5xx, timeout or malformed answer.")
@click.option("--backoff", default=0.5, show_default=True, type=click.FloatRange(0, 60),
              help="Seconds before the first retry, doubling each time (at most 30 s); a "
                   "429's Retry-After wins.")
@click.option("--retry-errors", is_flag=True, help="Call again the pairs whose recorded "
              "call failed.")
@click.option("--limit", default=None, type=click.IntRange(1), help="The first N samples.")
@click.option("--share", default=None, type=click.FloatRange(0, 1, min_open=True),
              help="A seeded random share of the samples.")
@click.option("--seed", default=0, show_default=True)
def collect_command(  # noqa: PLR0913 - one parameter per CLI option
        source: Path, config: Path, out: Path, only: str | None, max_tokens: int,
        stream: bool, spend_cap: float | None, concurrency: int | None, retries: int,
        backoff: float, retry_errors: bool, limit: int | None, share: float | None,
        seed: int) -> None:
    """Send every sample of SET (a set folder or a bench) to each backend and write the
    measured answers to --out (a set folder: outcomes.jsonl with score null until judged).
    Run it again to go on: recorded calls are never made twice."""
    from vlroute.collect.calls import RetryPolicy
    from vlroute.collect.run import CollectOptions, collect
    from vlroute.collect.samples import read_samples

    samples = read_samples(source)
    backends, names = backends_of(config, only)
    options = CollectOptions(max_tokens=max_tokens, stream=stream, spend_cap_usd=spend_cap,
                             concurrency=concurrency,
                             retry=RetryPolicy(retries=retries, base_s=backoff),
                             retry_errors=retry_errors, limit=limit, share=share, seed=seed,
                             only=names)
    with progress_bar("collect") as update:
        report = collect(samples, backends, out, options=options, progress=update)
    rows = [[name, s["model"], s["answered"], s["failed"], fmt(s["latency_s"]["p50"]),
             fmt(s["latency_s"]["p90"]), fmt(s["ttft_s"]["p50"]),
             fmt(s["cost_usd_mean"], 6), fmt(s["energy_j_mean"], 1)]
            for name, s in report.summary.items()]
    console.print(table(f"{out}: measured per backend", [
        "backend", "model", "answered", "failed", "latency p50 s", "p90 s", "ttft p50 s",
        "$ / request", "J / request"], rows))
    console.print(f"{report.made} call(s) made, {report.failed} failed, "
                  f"{report.recorded_before} already recorded (not repeated), "
                  f"{report.in_flight_repeated} in flight when the last run stopped (made "
                  f"again); spent ${report.spent_usd:.6f}."
                  + (f" {report.request_changed} recorded result(s) were for another request "
                     "(question, images, model, base_url or max_tokens changed): called again."
                     if report.request_changed else "")
                  + (f" {report.stale} recorded result(s) for another request left out of "
                     "outcomes.jsonl (collect those backends again)." if report.stale else "")
                  + (f" No prices in the config for {', '.join(report.unpriced)}: its "
                     "cost_usd is null (not $0), so the bench estimates it from the catalog; "
                     "it counts $0 against a spend cap." if report.unpriced else "")
                  + (f" {report.no_vision} sample(s) with images not sent to a backend "
                     "with vision: false." if report.no_vision else ""))
    if report.stopped:
        console.print(f"[yellow]Stopped early: {report.stopped}. Run again with a higher "
                      "--spend-cap to go on.[/yellow]")
