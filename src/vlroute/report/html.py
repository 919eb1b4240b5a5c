"""The self-contained HTML report: figures inline as SVG, tables, provenance. No network is
needed to open it; no script is loaded from elsewhere."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

from vlroute import __version__
from vlroute.report.displays import CostAccuracyDisplay, TauCurveDisplay, to_svg
from vlroute.report.tables import best_per_key, breakdown_table, fmt, pm, rank_rows

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d1d1f;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:36px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:22px 0 6px}.muted{color:#666}.note{background:#fff7e0;padding:8px 12px;
border-left:3px solid #e6a700;margin:12px 0}
table{border-collapse:collapse;margin:8px 0;background:#fff;font-variant-numeric:tabular-nums}
th,td{padding:4px 9px;border-bottom:1px solid #e6e6e6;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f0f0f2;font-weight:600}
tr:hover td{background:#eef5ff}td.best{background:#e3f4e6;font-weight:600}
td.setting{white-space:normal;max-width:240px;text-align:left;font-size:12px}
.scroll{overflow-x:auto}td.best::after{content:" \\2605";color:#2e7d32}
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
    out = [f"<section id='{escape(name)}' data-bench='{escape(name)}'>",
           f"<h2>{escape(name)}</h2><p class='muted'>{bench.get('n_samples', '?')} requests, "
           f"{bench.get('n_models', '?')} candidate models, labels "
           f"{escape(str(bench.get('label')))}; {len(doc['seeds'])} seed(s).</p>"]
    out += [_rank_table(doc), "<h3>Accuracy against cost</h3>"]
    for scenario in dict.fromkeys(s["name"] for s in doc["scenarios"]):
        display = CostAccuracyDisplay.from_results(doc, scenario=scenario)
        out.append(_figure(f"cost-accuracy-{name}-{scenario}", to_svg(display.plot()),
                           "Grey: single models and their Pareto frontier; star: Oracle; "
                           "points: routers (mean ± std over seeds); thin lines: each "
                           "router's dev sweep (seed 0)."))
    for i, curve in enumerate(doc.get("tau_curves", [])):
        out.append("<h3>Edge/cloud threshold curve</h3>")
        out.append(_figure(f"tau-{name}-{i}", to_svg(TauCurveDisplay.from_curve(curve).plot()),
                           _tau_caption(curve)))
    out += [_singles(doc), _breakdowns(doc), _timings(doc), _skipped(doc),
            _provenance(doc), "</section>"]
    return "\n".join(out)


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


def _rank_table(doc: dict[str, Any]) -> str:
    head = ("<h3>Rank Score (mean ± std over seeds)</h3><table data-table='rank'><tr>"
            "<th>router</th><th>scenario</th><th>split</th><th>Avg Acc</th>"
            "<th>Avg Cost ($/10K)</th><th>Rank Score</th><th>gap closed</th><th>APSP</th>"
            "<th>edge share</th><th>RCS</th><th>chosen on dev</th></tr>")
    body = []
    for row in rank_rows(doc):
        v = row.values
        body.append(
            f"<tr data-router='{escape(row.router)}' data-scenario='{escape(row.scenario)}' "
            f"data-split='{escape(row.split)}'><td>{escape(row.router)}</td>"
            f"<td>{escape(row.scenario)}</td><td>{escape(row.split)}</td>"
            + _td(v.get("avg_acc"), pm(v, "avg_acc", 3), "avg_acc")
            + _td(v.get("avg_cost_per_10k"), pm(v, "avg_cost_per_10k", 3), "avg_cost_per_10k")
            + _td(v.get("rank_score"), pm(v, "rank_score", 2), "rank_score")
            + _td(v.get("gap_closed"), fmt(v.get("gap_closed")), "gap_closed")
            + _td(v.get("apsp"), fmt(v.get("apsp")), "apsp")
            + _td(v.get("edge_share"), fmt(v.get("edge_share")), "edge_share")
            + _td(v.get("rcs"), fmt(v.get("rcs")), "rcs")
            + f"<td class='setting'>{escape(row.setting)}</td></tr>")
    return "<div class='scroll'>" + head + "".join(body) + "</table></div>"


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
