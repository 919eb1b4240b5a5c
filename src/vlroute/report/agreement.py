"""The report's judge-agreement block: drawn from the ``agreement`` entries a results
document carries (``vlroute judge agree --results``), never recomputed."""

from __future__ import annotations

from html import escape
from typing import Any

from vlroute.report.tables import fmt

_NAMES = {"spearman": "Spearman's rho", "quadratic_kappa": "Cohen's kappa (quadratic)",
          "mae": "mean absolute error (0-10)", "solved_agreement": "same solved verdict"}


def agreement_section(doc: dict[str, Any]) -> str:
    """One table per agreement entry of ``doc``; empty when it has none."""
    entries = doc.get("agreement") or []
    return "\n".join(_entry(e) for e in entries if isinstance(e, dict))


def _entry(entry: dict[str, Any]) -> str:
    judge = entry.get("judge") or {}
    mapping = entry.get("mapping") or {}
    rows = "".join(
        f"<tr data-statistic='{escape(name)}'><td>{escape(_NAMES.get(name, name))}</td>"
        f"<td data-value='{stat.get('value')!r}'>{escape(fmt(stat.get('value')))}</td>"
        f"<td>{escape(fmt((stat.get('ci') or [None])[0]))} - "
        f"{escape(fmt((stat.get('ci') or [None, None])[1]))}</td></tr>"
        for name, stat in (entry.get("metrics") or {}).items())
    c = entry.get("confusion") or {}
    mes = entry.get("mes")
    confusion = (f"<table data-table='agreement-confusion'><tr><th>solved at MES {mes}</th>"
                 "<th>human: yes</th><th>human: no</th></tr>"
                 f"<tr><td>judge: yes</td><td>{c.get('both')}</td><td>{c.get('judge_only')}"
                 f"</td></tr><tr><td>judge: no</td><td>{c.get('human_only')}</td>"
                 f"<td>{c.get('neither')}</td></tr></table>")
    boot = entry.get("bootstrap") or {}
    lead = (f"Judge {escape(', '.join(judge.get('models', [])))} "
            f"({escape(', '.join(judge.get('rubrics', [])))}) against "
            f"{escape(str(entry.get('human')))} on {entry.get('n')} responses; human scores "
            f"mapped to 0-10 as {escape(str(mapping.get('formula')))}; "
            f"{int(100 * float(boot.get('level', 0.95)))}% bootstrap intervals over "
            f"{boot.get('n_boot')} resamples.")
    return ("<h3>Judge agreement with human labels</h3>"
            f"<p class='muted'>{lead}</p><table data-table='agreement'><tr><th>statistic"
            "</th><th>value</th><th>interval</th></tr>" + rows + "</table>" + confusion)


__all__ = ["agreement_section"]
