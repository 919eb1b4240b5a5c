"""The self-contained HTML report: figures inline as SVG, tables, provenance. No network is
needed to open it; no script is loaded from elsewhere."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

from vlroute import __version__
from vlroute.report.agreement import agreement_section
from vlroute.report.displays import CostAccuracyDisplay, TauCurveDisplay, to_svg
from vlroute.report.headline import Headline, headline
from vlroute.report.tables import (
    best_per_key,
    breakdown_table,
    fmt,
    pm,
    rank_rows,
    scenario_order,
    split_pm,
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d1d1f;
background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:36px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:22px 0 6px}.muted{color:#666}.note{background:#fff7e0;padding:8px 12px;
border-left:3px solid #e6a700;margin:12px 0}
table{border-collapse:collapse;margin:8px 0;background:#fff;font-variant-numeric:tabular-nums;
font-size:13px}
th,td{padding:4px 9px;border-bottom:1px solid #e6e6e6;text-align:right;white-space:nowrap;
vertical-align:top}
th:first-child,td:first-child{text-align:left}th{background:#f0f0f2;font-weight:600}
tr:hover td{background:#eef5ff}td.best{background:#e3f4e6;font-weight:600}
tr.group th{background:#e6ebf3;text-align:left;font-weight:600}tr.lead td{font-weight:600}
td.text,th.text{text-align:left}td.setting{text-align:left;font-size:12px;color:#444}
.sd{display:block;font-size:11px;font-weight:400;color:#777;line-height:1.15}
.scroll{overflow-x:auto}td.best::after{content:" \\2605";color:#2e7d32}
.headline{background:#fff;border:1px solid #d9e2ef;border-left:4px solid #0072B2;
padding:10px 16px;margin:12px 0}.answer{font-size:16px;margin:6px 0 10px}
.headline h3{margin-top:14px}
figure{margin:12px 0;background:#fff;padding:8px;border:1px solid #e6e6e6;overflow-x:auto}
figure svg{max-width:100%;height:auto}figcaption{color:#555;font-size:12px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px}dt{font-weight:600}
dd{margin:0}code{font-size:12px}
"""


def render(docs: dict[str, dict[str, Any]], *, title: str = "vlroute report") -> str:
    """The whole report for one or more results documents (keyed by set name)."""
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>",
             f"<h1>{escape(title)}</h1><p class='muted'>{len(docs)} bench(es); written "
             f"{created} by vlroute {escape(__version__)}.</p>",
             "<p class='note'>Cost, latency and energy are <b>estimates</b> from the cost "
             "catalog (token rules x prices, latency and energy profiles) unless the "
             "provenance says they were measured. Accuracy comes from the logs.</p>"]
    if len(docs) > 1:
        parts.append("<nav><b>Benches:</b> " + " · ".join(
            f"<a href='#{escape(name)}'>{escape(name)}</a>" for name in docs) + "</nav>")
    for name, doc in docs.items():
        parts.append(_section(name, doc))
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _section(name: str, doc: dict[str, Any]) -> str:
    bench = doc["bench"]
    top = headline(doc)
    scenarios = scenario_order(doc)
    out = [f"<section id='{escape(name)}' data-bench='{escape(name)}'>",
           f"<h2>{escape(name)}</h2><p class='muted'>{bench.get('n_samples', '?')} requests, "
           f"{bench.get('n_models', '?')} candidate models, labels "
           f"{escape(str(bench.get('label')))}; {len(doc['seeds'])} seed(s).</p>",
           _headline(top, doc), "<h3>Accuracy against cost</h3>",
           _plane(name, doc, scenarios[0], lead=True), _rank_table(doc)]
    if len(scenarios) > 1:
        out.append("<h3>Accuracy against cost, the other scenarios</h3>")
        out += [_plane(name, doc, scenario) for scenario in scenarios[1:]]
    for i, curve in enumerate(doc.get("tau_curves", [])):
        out.append("<h3>Edge/cloud threshold curve</h3>")
        out.append(_figure(f"tau-{name}-{i}", to_svg(TauCurveDisplay.from_curve(curve).plot()),
                           _tau_caption(curve)))
    out += [_singles(doc), _breakdowns(doc), _timings(doc), _skipped(doc),
            agreement_section(doc), _provenance(doc), "</section>"]
    return "\n".join(out)


def _plane(name: str, doc: dict[str, Any], scenario: str, *, lead: bool = False) -> str:
    display = CostAccuracyDisplay.from_results(doc, scenario=scenario)
    caption = ("Grey: single models and their Pareto frontier; star: Oracle; points: routers "
               "(mean ± std over seeds); thin lines: each router's dev sweep (seed 0).")
    if lead and any(p.name == "auto" for p in display.routers):
        caption += " Diamond: auto, the router chosen on dev."
    return _figure(f"cost-accuracy-{name}-{scenario}", to_svg(display.plot()), caption)


def _figure(key: str, svg: str, caption: str) -> str:
    return (f"<figure data-figure='{escape(key)}'>{svg}<figcaption>{escape(caption)}"
            "</figcaption></figure>")


def _tau_caption(curve: dict[str, Any]) -> str:
    chosen, test = curve.get("chosen_on_dev"), curve.get("test_at_chosen")
    head = (f"{curve['router']} P(solved) at MES {curve['mes']:g}, edge model first, mean over "
            f"{curve['seeds']} seed(s). ")
    if not chosen or not test:
        return head + (f"No tau keeps the dev APSP drop within "
                       f"{curve.get('max_apsp_drop', 0.05):.0%}.")
    return head + (f"Chosen on dev (largest edge share with APSP drop <= "
                   f"{curve.get('max_apsp_drop', 0.05):.0%}): tau {chosen['tau']:g}; on test "
                   f"edge share {fmt(test['edge_share'])}, APSP drop {fmt(test['apsp_drop'])}.")


def _td(value: Any, text: str, metric: str, css: str = "") -> str:
    cls = f" class='{css}'" if css else ""
    data = "" if value is None else f" data-value='{value!r}'"
    return f"<td data-metric='{metric}'{data}{cls}>{escape(text)}</td>"


def _num(row: dict[str, Any], key: str, digits: int = 3, *, percent: bool = False,
         std: bool = True) -> str:
    """A mean, with the std over seeds below it in a smaller font."""
    value = row.get(key)
    mean, spread = split_pm(row, key, digits, percent=percent)
    data = "" if value is None else f" data-value='{value!r}'"
    below = f"<span class='sd'>{escape(spread)}</span>" if spread and std else ""
    return f"<td data-metric='{key}'{data}>{escape(mean)}{below}</td>"


def _headline(top: Headline, doc: dict[str, Any]) -> str:
    body = "".join(
        f"<tr data-router='{escape(row['router'])}'{' class=lead' if lead else ''}>"
        f"<td>{escape(label)}</td>" + _num(row, "rank_score", 2) + _num(row, "avg_acc")
        + _num(row, "avg_cost_per_10k") + _num(row, "gap_closed", percent=True, std=lead)
        + "</tr>" for row, label, lead in top.rows())
    return (f"<div class='headline' data-block='headline' data-scenario='{escape(top.scenario)}'>"
            f"<p class='answer'>{escape(' '.join(top.sentences()))}</p>"
            "<table data-table='headline'><tr><th></th><th>Rank Score</th><th>accuracy</th>"
            "<th>cost ($/10K)</th><th>gap closed</th></tr>" + body + "</table>"
            f"<p class='muted'>{escape(top.caption())}</p>" + _choices(top, doc) + "</div>")


def _choices(top: Headline, doc: dict[str, Any]) -> str:
    if not top.choices:
        return f"<p>{escape(top.dev_choice_sentence())}</p>" if top.dev_choice else ""
    body = "".join(
        f"<tr data-seed='{c.seed}'><td>{c.seed}</td><td class='text'>"
        f"{escape(c.chosen)}</td><td class='text'>"
        f"{escape(c.labels or '-')}</td><td class='text'>{escape(c.cost_weight or '-')}</td>"
        + _td(c.dev_rank_score, fmt(c.dev_rank_score, 2), "dev_rank_score")
        + f"<td class='text'>{escape(c.runner_up or '-')}</td>"
        + _td(c.runner_up_rank_score, fmt(c.runner_up_rank_score, 2), "runner_up_rank_score")
        + _td(c.rank_score, fmt(c.rank_score, 2), "rank_score") + "</tr>"
        for c in top.choices)
    return ("<h3>What auto chose on dev, per seed, and why</h3><table data-table='auto'><tr>"
            "<th>seed</th><th class='text'>chosen</th><th class='text'>labels</th>"
            "<th class='text'>cost_weight</th><th>dev Rank Score</th><th class='text'>"
            f"runner-up on dev</th><th>its dev Rank Score</th><th>{escape(top.split)} Rank "
            "Score</th></tr>" + body + "</table><p class='muted'>" + escape(_tried(doc))
            + "</p>")


def _tried(doc: dict[str, Any]) -> str:
    tried = doc["auto"][0].get("tried", [])
    families = sorted({t["router"] for t in tried if t["router"] != "constant"})
    singles = sum(t["router"] == "constant" for t in tried)
    return (f"Each seed tried {len(tried)} candidates on dev: "
            + (", ".join(families) or "no router family")
            + " (sample and group-mean labels, cost_weight tuned on dev)"
            + (f" and {singles} single models" if singles else "")
            + "; the best dev Rank Score wins, ties to the simpler candidate.")


def _rank_table(doc: dict[str, Any]) -> str:
    n_seeds = max((r.get("n_seeds", 1) for r in doc["rows"] if r.get("seed") == "mean"),
                  default=1)
    head = ("<h3>Every router under every scenario</h3><p class='muted'>Mean over "
            f"{n_seeds} seed(s), std below. acc: average accuracy; $/10K: average cost per "
            "10,000 requests (estimated); gap: share of the gap between the best single model "
            "and the Oracle closed; dev choice: what each seed's dev split chose (hover for "
            "every digit).</p><div class='scroll'><table data-table='rank'><tr>"
            "<th>router</th><th>acc</th><th>$/10K</th><th>Rank Score</th><th>gap</th>"
            "<th>APSP</th><th>edge share</th><th>RCS</th><th title='expected calibration error of "
            "the predicted quality (10 bins)'>ECE</th><th class='text'>dev choice</th></tr>")
    body, group = [], None
    for row in rank_rows(doc):
        if (row.scenario, row.split) != group:
            group = (row.scenario, row.split)
            body.append(f"<tr class='group'><th colspan='10'>{escape(row.scenario)} · "
                        f"{escape(row.split)}</th></tr>")
        v = row.values
        body.append(
            f"<tr data-router='{escape(row.router)}' data-scenario='{escape(row.scenario)}' "
            f"data-split='{escape(row.split)}'"
            + (" class='lead'" if row.router == "auto" else "")
            + f"><td>{escape(row.router)}</td>" + _num(v, "avg_acc")
            + _num(v, "avg_cost_per_10k") + _num(v, "rank_score", 2)
            + _num(v, "gap_closed", percent=True) + _num(v, "apsp") + _num(v, "edge_share")
            + _num(v, "rcs") + _num(v, "ece")
            + f"<td class='setting' title='{escape(row.setting_full)}'>"
            f"{escape(row.setting)}</td></tr>")
    return head + "".join(body) + "</table></div>"


def _singles(doc: dict[str, Any]) -> str:
    if not doc.get("singles"):
        return ""
    rows = sorted(doc["singles"], key=lambda r: (r["scenario"], r["split"],
                                                 r["avg_cost_per_10k"] or 0))
    body = "".join(
        f"<tr data-model='{escape(r['model'])}'><td>{escape(r['model'])}</td>"
        f"<td>{escape(str(r.get('tier')))}</td><td>{escape(r['scenario'])}</td>"
        + _td(r.get("avg_acc"), pm(r, "avg_acc", 3), "avg_acc")
        + _td(r.get("avg_cost_per_10k"), pm(r, "avg_cost_per_10k", 3), "avg_cost_per_10k")
        + _td(r.get("rank_score"), pm(r, "rank_score", 2), "rank_score")
        + f"<td>{'yes' if r.get('pareto') else ''}</td></tr>" for r in rows)
    return ("<h3>Single models</h3><table data-table='singles'><tr><th>model</th><th>tier</th>"
            "<th>scenario</th><th>Avg Acc</th><th>Avg Cost ($/10K)</th><th>Rank Score</th>"
            "<th>on the frontier</th></tr>" + body + "</table>")


def _breakdowns(doc: dict[str, Any]) -> str:
    out = []
    for by in ("dataset", "task"):
        routers, keys, cells = breakdown_table(doc, by)
        if not keys:
            continue
        best = best_per_key(routers, keys, cells)
        head = "".join(f"<th>{escape(k)}</th>" for k in keys)
        body = []
        for r in routers:
            tds = []
            for k in keys:
                cell = cells.get((r, k))
                acc = cell["avg_acc"] if cell else None
                tds.append(_td(acc, fmt(acc), "avg_acc",
                               "best" if r in best.get(k, set()) else ""))
            body.append(f"<tr data-router='{escape(r)}'><td>{escape(r)}</td>{''.join(tds)}</tr>")
        out.append(f"<h3>Accuracy per {by} (test, seed 0; ★ best router, Oracle aside)</h3>"
                   f"<div style='overflow-x:auto'><table data-table='breakdown-{by}'>"
                   f"<tr><th>router</th>{head}</tr>{''.join(body)}</table></div>")
    return "\n".join(out)


def _timings(doc: dict[str, Any]) -> str:
    if not doc.get("timings"):
        return ""
    body = "".join(
        f"<tr data-router='{escape(t['router'])}'><td>{escape(t['router'])}</td>"
        f"<td>{'yes' if t.get('with_encoders') else 'no'}</td><td>{escape(str(t['batch']))}</td>"
        + _td(t.get("ms_per_request_p50"), fmt(t.get("ms_per_request_p50"), 4), "p50")
        + _td(t.get("ms_per_request_p99"), fmt(t.get("ms_per_request_p99"), 4), "p99")
        + _td(t.get("requests_per_s"), fmt(t.get("requests_per_s"), 0), "rps") + "</tr>"
        for t in doc["timings"])
    return ("<h3>Decision latency and throughput</h3><p class='muted'>Routing step only, "
            "features precomputed, the whole split as one batch (per request: batch time / "
            "batch size; p50 / p99 over seeds). <code>bench/throughput.py</code> measures "
            "single requests and the encoders.</p><table data-table='timings'><tr>"
            "<th>router</th><th>encoders</th><th>batch</th><th>ms / request p50</th>"
            "<th>p99</th><th>requests / s</th></tr>" + body + "</table>")


def _skipped(doc: dict[str, Any]) -> str:
    items = "".join(f"<li><b>{escape(s['router'])}</b> in {escape(s['scenario'])}: "
                    f"{escape(s['reason'])}</li>" for s in doc.get("skipped", []))
    return f"<h3>Not evaluated</h3><ul>{items}</ul>" if items else ""


def _provenance(doc: dict[str, Any]) -> str:
    b = doc["bench"]
    econ = b.get("economics", {})
    seeds = ", ".join(f"{s['seed']} (best single {s.get('best_single_by_rank')}, reference "
                      f"{s.get('reference_model')})" for s in doc["seeds"])
    feats = doc.get("features") or {}
    entries = [
        ("bench", f"{b.get('name')} at {b.get('path')}"),
        ("sources", ", ".join(f"{s['path']} (sha256 {s['sha256'][:12]}…)"
                              for s in b.get("sources", []))),
        ("licence", str(b.get("license"))),
        ("notes", str(b.get("set_info", {}).get("notes", ""))),
        ("commit", str(b.get("commit"))),
        ("split", f"seed {b.get('split', {}).get('seed')}, fractions "
                  f"{b.get('split', {}).get('fractions')}, grouped; evaluation seeds: {seeds}"),
        ("features", ", ".join(f"{k}={v}" for k, v in feats.items()) or "none"),
        ("estimated", ", ".join(econ.get("estimated", [])) or "nothing"),
        ("how", str(econ.get("method", ""))),
        ("catalog", f"{econ.get('catalog')} (sha256 {str(econ.get('catalog_sha256'))[:12]}…)"),
        ("Rank Score bounds", " - ".join(fmt(x) for x in b.get("cost_bounds_per_10k", []))
         + " $/10K"),
        ("results", f"{doc['schema']}, written {doc.get('created_at')} by vlroute "
                    f"{doc.get('vlroute_version')}"),
    ]
    return ("<h3>Provenance</h3><dl data-block='provenance'>" + "".join(
        f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in entries) + "</dl>")
