"""The Markdown summary: reads well in a terminal and in a pull request. Like the HTML report
it leads with the headline (:mod:`vlroute.report.headline`), then every router."""

from __future__ import annotations

from typing import Any

from vlroute.report.headline import Headline, headline
from vlroute.report.tables import fmt, pct, pm, rank_rows


def render_markdown(docs: dict[str, dict[str, Any]]) -> str:
    """The headline, Rank Score tables, the tau choice and provenance of every document."""
    out = ["# vlroute report", "",
           "Cost, latency and energy are estimates from the cost catalog unless stated.", ""]
    for name, doc in docs.items():
        b = doc["bench"]
        out += [f"## {name}", "",
                f"{b.get('n_samples', '?')} requests, {b.get('n_models', '?')} candidate "
                f"models, {len(doc['seeds'])} seed(s); licence: {b.get('license')}.", ""]
        out += _headline(headline(doc))
        out += ["### Every router under every scenario", "",
                "| router | scenario | split | Avg Acc | Avg Cost ($/10K) | Rank Score | "
                "gap closed |", "|---|---|---|--:|--:|--:|--:|"]
        for row in rank_rows(doc):
            v = row.values
            out.append(f"| {row.router} | {row.scenario} | {row.split} | "
                       f"{pm(v, 'avg_acc', 3)} | {pm(v, 'avg_cost_per_10k', 3)} | "
                       f"{pm(v, 'rank_score', 2)} | {pm(v, 'gap_closed', percent=True)} |")
        out += _tau(doc)
        for s in doc.get("skipped", []):
            out.append(f"- {s['router']} sat out {s['scenario']}: policy router.")
        econ = b.get("economics", {})
        out += ["", f"Provenance: commit {b.get('commit')}; estimated: "
                f"{', '.join(econ.get('estimated', [])) or 'nothing'}; catalog "
                f"{econ.get('catalog')}.", ""]
    return "\n".join(out)


def _headline(top: Headline) -> list[str]:
    out = ["**" + " ".join(top.sentences()) + "**", "",
           f"| {top.scenario}, {top.split} | Rank Score | Avg Acc | Avg Cost ($/10K) | "
           "gap closed |", "|---|--:|--:|--:|--:|"]
    for row, label, lead in top.rows():
        gap = pm(row, "gap_closed", percent=True) if lead else pct(row.get("gap_closed"))
        out.append(f"| {f'**{label}**' if lead else label} | {pm(row, 'rank_score', 2)} | "
                   f"{pm(row, 'avg_acc', 3)} | {pm(row, 'avg_cost_per_10k', 3)} | {gap} |")
    out += ["", top.caption(), ""]
    if top.dev_choice:
        out += [top.dev_choice_sentence(), ""]
    if top.choices:
        out += ["What auto chose on dev, per seed, and why:", "",
                "| seed | chosen | labels | cost_weight | dev Rank Score | runner-up on dev | "
                f"its dev Rank Score | {top.split} Rank Score |",
                "|--:|---|---|---|--:|---|--:|--:|"]
        out += [f"| {c.seed} | {c.chosen} | {c.labels or '-'} | {c.cost_weight or '-'} | "
                f"{fmt(c.dev_rank_score, 2)} | {c.runner_up or '-'} | "
                f"{fmt(c.runner_up_rank_score, 2)} | {fmt(c.rank_score, 2)} |"
                for c in top.choices]
        out.append("")
    return out


def _tau(doc: dict[str, Any]) -> list[str]:
    out = []
    for curve in doc.get("tau_curves", []):
        chosen, test = curve.get("chosen_on_dev"), curve.get("test_at_chosen")
        out += ["", f"Edge/cloud pair {curve['pair'][0]} / {curve['pair'][1]} (MES "
                f"{curve['mes']:g}): " + (
                    f"tau {chosen['tau']:g} chosen on dev; test edge share "
                    f"{fmt(test['edge_share'])}, APSP drop {fmt(test['apsp_drop'])}, "
                    f"CA {fmt(test['ca'])}, RCS {fmt(test['rcs'])}."
                    if chosen and test else "no tau keeps the dev APSP drop within "
                    f"{curve.get('max_apsp_drop', 0.05):.0%}.")]
    return out
