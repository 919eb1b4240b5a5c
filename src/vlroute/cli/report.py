"""``vlroute report``: results documents -> HTML report, figures, Markdown summary."""

from __future__ import annotations

from pathlib import Path

import click

from vlroute.cli._ui import console
from vlroute.evaluation.results import load_result_set


@click.command("report")
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write [default: RESULTS with .html].")
@click.option("--figures", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write every figure as PNG and SVG into this folder (replaced).")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a Markdown summary.")
@click.option("--title", default="vlroute report", show_default=True)
def report(results: Path, out: Path | None, figures: Path | None, markdown: Path | None,
           title: str) -> None:
    """Write a self-contained HTML report from a results document (`vlroute eval --results`)
    or a file of several keyed by set name (bench/results/routers.json)."""
    from vlroute.report import write_report

    docs = load_result_set(results)
    out = out or results.with_suffix(".html")
    with console.status("drawing the report"):
        written = write_report(docs, out, figures=figures, markdown=markdown, title=title)
    console.print(f"report: {out}")
    if figures:
        console.print(f"figures: {figures} ({sum(p.suffix == '.png' for p in written)} PNG)")
    if markdown:
        console.print(f"markdown: {markdown}")
