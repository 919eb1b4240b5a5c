"""Reports from results documents: one self-contained HTML file, PNG/SVG figures, and a
Markdown summary. Everything is drawn from the numbers in the documents; nothing here
recomputes a metric."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vlroute._io import atomic_directory, atomic_path
from vlroute.report.displays import CostAccuracyDisplay, TauCurveDisplay, save
from vlroute.report.html import render
from vlroute.report.markdown import render_markdown
from vlroute.report.tables import scenario_order


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def write_report(docs: dict[str, dict[str, Any]], out: Path, *, figures: Path | None = None,
                 markdown: Path | None = None, title: str = "vlroute report",
                 overwrite: bool = True) -> list[Path]:
    """Write the HTML report to ``out`` (and figures / Markdown when asked); returns the paths
    written. Each file is written to a temporary name and renamed."""
    written = []
    html = render(docs, title=title)
    with atomic_path(Path(out)) as tmp:
        tmp.write_text(html, "utf-8")
    written.append(Path(out))
    if markdown is not None:
        with atomic_path(Path(markdown)) as tmp:
            tmp.write_text(render_markdown(docs), "utf-8")
        written.append(Path(markdown))
    if figures is not None:
        with atomic_directory(Path(figures), overwrite=overwrite) as staging:
            for name, doc in docs.items():
                for scenario in scenario_order(doc):
                    fig = CostAccuracyDisplay.from_results(doc, scenario=scenario).plot()
                    save(fig, staging / _stem(f"cost-accuracy-{name}-{scenario}"))
                for i, curve in enumerate(doc.get("tau_curves", [])):
                    fig = TauCurveDisplay.from_curve(curve).plot()
                    save(fig, staging / _stem(f"tau-{name}-{i}"))
        written += sorted(Path(figures).iterdir())
    return written


__all__ = ["CostAccuracyDisplay", "TauCurveDisplay", "render", "render_markdown",
           "write_report"]
