"""The Markdown summary: reads well in a terminal and in a pull request."""

from __future__ import annotations

from typing import Any

from vlroute.report.tables import fmt, pm, rank_rows


def render_markdown(docs: dict[str, dict[str, Any]]) -> str:
    """Rank Score tables, the tau choice and provenance of every document."""
    out = ["# vlroute report", "",
           "Cost, latency and energy are estimates from the cost catalog unless stated.", ""]
    for name, doc in docs.items():
        b = doc["bench"]
        out += [f"## {name}", "",
                f"{b.get('n_samples', '?')} requests, {b.get('n_models', '?')} candidate "
                f"models, {len(doc['seeds'])} seed(s); licence: {b.get('license')}.", "",
                "| router | scenario | split | Avg Acc | Avg Cost ($/10K) | Rank Score | "
                "gap closed |", "|---|---|---|---|---|---|---|"]
        for row in rank_rows(doc):
            v = row.values
            out.append(f"| {row.router} | {row.scenario} | {row.split} | "
                       f"{pm(v, 'avg_acc', 3)} | {pm(v, 'avg_cost_per_10k', 3)} | "
                       f"{pm(v, 'rank_score', 2)} | {fmt(v.get('gap_closed'))} |")
        for curve in doc.get("tau_curves", []):
            chosen, test = curve.get("chosen_on_dev"), curve.get("test_at_chosen")
            out += ["", f"Edge/cloud pair {curve['pair'][0]} / {curve['pair'][1]} (MES "
                    f"{curve['mes']:g}): " + (
                        f"tau {chosen['tau']:g} chosen on dev; test edge share "
                        f"{fmt(test['edge_share'])}, APSP drop {fmt(test['apsp_drop'])}, "
                        f"CA {fmt(test['ca'])}, RCS {fmt(test['rcs'])}."
                        if chosen and test else "no tau keeps the dev APSP drop within "
                        f"{curve.get('max_apsp_drop', 0.05):.0%}.")]
        for s in doc.get("skipped", []):
            out.append(f"- {s['router']} sat out {s['scenario']}: policy router.")
        econ = b.get("economics", {})
        out += ["", f"Provenance: commit {b.get('commit')}; estimated: "
                f"{', '.join(econ.get('estimated', [])) or 'nothing'}; catalog "
                f"{econ.get('catalog')}.", ""]
    return "\n".join(out)
