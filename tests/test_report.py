"""The report: built from results documents only, self-contained, and checked in headless
Chromium (Debian's ``chromium``; ``.ci/run`` installs it and sets VLROUTE_BROWSER_TEST=require,
elsewhere the browser test is skipped when no Chromium is found)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_set

from vlroute.data import READERS, build_bench
from vlroute.evaluation import EvalSpec, evaluate_bench, flat_rows, save_results
from vlroute.evaluation.tau import tau_curve
from vlroute.report import render, render_markdown, write_report
from vlroute.report.headline import headline
from vlroute.report.tables import pm
from vlroute.scenarios import PRESETS, TUNED, parse_scenario

ARTIFACTS = Path(os.environ.get("VLROUTE_TEST_ARTIFACTS", "build/test-artifacts"))
THREE = [{"model": m, "display_name": m, "family": "F", "params_b": p, "open_weights": True,
          "modality": "vision-language", "notes": ""}
         for m, p in (("Qwen2-VL-7B-Instruct", 7), ("Qwen2-VL-72B-Instruct", 72),
                      ("gpt-4o-2024-08-06", None))]


ROUTERS = ("oracle", "best_single_by_rank", "cheapest_global", "knn", "prototype")


def results(tmp_path: Path, *, images: bool = True, graded: bool = False,
            datasets: int = 1, routers: tuple[str, ...] = ROUTERS,
            scenarios: tuple[str, ...] = (TUNED, "quality")) -> dict[str, Any]:
    root = make_set(tmp_path / "set", n_groups=12, per_group=3, images=images, models=THREE)
    if graded or datasets > 1:
        _rewrite(root, graded, datasets)
    bench = build_bench(READERS.get("jsonl")(root, tmp_path / ".w"), tmp_path / "bench")
    X = np.random.default_rng(0).normal(size=(len(bench.samples), 8))
    doc = evaluate_bench(bench, EvalSpec(
        routers=routers, scenarios=tuple(PRESETS.get(s) or parse_scenario(s) for s in scenarios),
        seeds=2, features=X, feature_spec={"dim": 8}, params={"knn": {"n_neighbors": 5}}))
    doc["tau_curves"].append(tau_curve(bench, X, ("Qwen2-VL-7B-Instruct",
                                                  "Qwen2-VL-72B-Instruct"), seeds=2))
    return doc


def _rewrite(root: Path, graded: bool, datasets: int) -> None:
    samples = [json.loads(line) for line in (root / "samples.jsonl").read_text().splitlines()]
    for s in samples:
        s["dataset"] = f"Set{int(s['group'][1:]) % datasets}"
    (root / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    if graded:
        outcomes = [json.loads(line)
                    for line in (root / "outcomes.jsonl").read_text().splitlines()]
        for i, o in enumerate(outcomes):
            o["score"] = (i % 5) / 4
            o["raw_score"] = 1 + i % 5
        (root / "outcomes.jsonl").write_text("".join(json.dumps(o) + "\n" for o in outcomes))
        info = json.loads((root / "set.json").read_text())
        info.update(label="graded", raw_scale=[1, 5])
        (root / "set.json").write_text(json.dumps(info))


@pytest.mark.parametrize("kind", ["images", "text_only", "graded", "two_datasets"])
def test_report_renders_every_kind_of_bench(kind: str, tmp_path: Path) -> None:
    doc = results(tmp_path, images=kind != "text_only", graded=kind == "graded",
                  datasets=2 if kind == "two_datasets" else 1)
    save_results(doc, tmp_path / "r.json")
    written = write_report({"toy": doc}, tmp_path / "report.html",
                           figures=tmp_path / "fig", markdown=tmp_path / "summary.md")
    html = (tmp_path / "report.html").read_text()
    assert not re.search(r"(src|href)=['\"]https?:", html)       # nothing to fetch
    assert html.count("<figure") == 3                  # two scenarios + one tau curve
    for row in flat_rows(doc):
        cell = re.search(rf"<tr data-router='{row['router']}' data-scenario='{row['scenario']}'"
                         rf"[^>]*>.*?data-metric='rank_score' data-value='([^']+)'", html)
        assert cell and float(cell.group(1)) == pytest.approx(row["rank_score"])
    assert any(s["router"] == "prototype" and s["scenario"] == "quality"
               for s in doc["skipped"]) and "Not evaluated" in html
    assert len([p for p in written if p.suffix == ".png"]) == 3
    assert all(p.stat().st_size > 1000 for p in written)
    md = (tmp_path / "summary.md").read_text()
    assert "| knn |" in md and "Rank Score" in md
    assert ("Accuracy per dataset" in html) == (kind == "two_datasets")
    # no auto here: the headline leads with the best learned router, before the big table
    assert html.index("data-block='headline'") < html.index("data-table='rank'")
    assert "the best learned router (this document has no auto)" in html
    assert "data-table='auto'" not in html
    assert md.index("the best learned router") < md.index("### Every router")


@pytest.fixture(scope="module")
def auto_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """auto and knn with cost_weight@dev listed last, as a user may pass the scenarios."""
    return results(tmp_path_factory.mktemp("auto"), scenarios=("quality", TUNED),
                   routers=("oracle", "best_single_by_rank", "knn", "auto"))


def test_report_leads_with_auto_against_best_single_and_oracle(
        auto_doc: dict[str, Any], tmp_path: Path) -> None:
    write_report({"toy": auto_doc}, tmp_path / "r.html", markdown=tmp_path / "r.md")
    html, md = (tmp_path / "r.html").read_text(), (tmp_path / "r.md").read_text()
    top = html.index("data-block='headline'")
    assert top < html.index("<figure") < html.index("data-table='rank'")
    figures = re.findall(r"data-figure='([^']+)'", html)
    assert figures[0] == f"cost-accuracy-toy-{TUNED}" and figures[1] == "cost-accuracy-toy-quality"
    block = html[top:html.index("data-table='rank'")]
    assert [m for m in re.findall(r"<tr data-router='([^']+)'", block)] == \
        ["auto", "best_single_by_rank", "oracle"]
    auto = next(r for r in flat_rows(auto_doc) if r["router"] == "auto"
                and r["scenario"] == TUNED)
    cell = re.search(r"data-metric='rank_score' data-value='([^']+)'", block)
    assert cell and float(cell.group(1)) == pytest.approx(auto["rank_score"])
    assert re.search(r"auto (closes|falls short|does no better)", block)
    for entry in auto_doc["auto"]:           # one line per seed: what auto chose and why
        assert f"<tr data-seed='{entry['seed']}'>" in block
    assert md.index("**auto ") < md.index("What auto chose") < md.index("### Every router")
    assert md.count("\n| 0 | ") == 1 and md.count("\n| 1 | ") == 1
    # the big table lists cost_weight@dev first too
    assert re.search(r"data-table='rank'.*?data-scenario='([^']+)'", html, re.S).group(1) \
        == TUNED   # type: ignore[union-attr]


def test_headline_without_auto_or_cost_weight_at_dev(auto_doc: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(auto_doc))
    doc.pop("auto")
    doc["rows"] = [r for r in doc["rows"] if r["router"] != "auto" and r["scenario"] != TUNED]
    doc["scenarios"] = [s for s in doc["scenarios"] if s["name"] != TUNED]
    html = render({"toy": doc})
    assert re.findall(r"data-figure='(cost-[^']+)'", html) == ["cost-accuracy-toy-quality"]
    assert "data-scenario='quality'" in html[html.index("data-block='headline'"):]
    assert "knn, the best learned router" in render_markdown({"toy": doc})
    doc["rows"] = [r for r in doc["rows"] if r["router"] != "knn"]
    assert "No learned router was evaluated" in render({"toy": doc})


def _doc(choices: list[str], gap: float) -> dict[str, Any]:
    """A hand-made document: auto's choice per seed ("constant" or a family), one lead row."""
    def row(router: str, rs: float, g: float) -> dict[str, Any]:
        return {"router": router, "scenario": TUNED, "split": "test", "seed": "mean",
                "n_seeds": len(choices), "rank_score": rs, "rank_score_std": 1.0,
                "gap_closed": g, "gap_closed_std": 0.1, "avg_acc": 0.5, "avg_acc_std": 0.0,
                "avg_cost_per_10k": 2.0, "avg_cost_per_10k_std": 0.0, "kind": "baseline"}
    tried = [{"router": "knn", "params": {}, "labels": "sample", "scenario": "cost_weight=0.5",
              "rank_score": 50.0},
             {"router": "constant", "params": {"model": "m1"}, "labels": "sample",
              "scenario": "cost_weight=0", "rank_score": 49.0}]
    auto = [{"seed": k, "router": c, "params": {"model": "m1"} if c == "constant" else {},
             "labels": "sample", "scenario": "cost_weight=0,by=usd" if c == "constant"
             else "cost_weight=0.5,by=usd,cost_axis=linear", "dev": {"rank_score": 50.0},
             "tried": tried} for k, c in enumerate(choices)]
    return {"scenarios": [{"name": TUNED}], "seeds": [{"best_single_by_rank": "m1"}] * 2,
            "rows": [row("auto", 40 + 20 * gap, gap), row("best_single_by_rank", 40, 0.0),
                     row("oracle", 60, 1.0)], "auto": auto}


@pytest.mark.parametrize(("choices", "gap", "words"), [
    (["knn", "knn"], 0.12, ["auto closes 12% of the gap between the best single model (m1) "
                            "and the Oracle", "routing paid on every seed: auto chose knn"]),
    (["constant", "knn"], -0.25, ["auto falls short of the best single model (m1) (gap "
                                  "closed -25%)", "routing did not pay on 1 of 2 seeds: auto "
                                  "chose a single model there (m1)"]),
    (["constant", "constant"], 0.0, ["auto does no better than the best single model (m1)",
                                     "did not pay on 2 of 2 seeds"]),
])
def test_headline_sentences(choices: list[str], gap: float, words: list[str]) -> None:
    top = headline(_doc(choices, gap))
    text = " ".join(top.sentences())
    assert all(w in text for w in words), text
    first = top.choices[0]
    if choices[0] == "constant":
        assert (first.chosen, first.cost_weight, first.runner_up) == ("single: m1", "", "knn, "
                                                                      "sample labels")
    else:
        assert (first.chosen, first.cost_weight, first.runner_up_rank_score) == \
            ("knn", "0.5 (linear axis)", 49.0)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_in_headless_chromium(auto_doc: dict[str, Any], tmp_path: Path) -> None:
    browser = _chromium()
    required = os.environ.get("VLROUTE_BROWSER_TEST") == "require"
    if browser is None and not required:
        pytest.skip("no Chromium here (apt-get install chromium)")
    assert browser, "VLROUTE_BROWSER_TEST=require but no chromium on PATH"
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    doc = auto_doc
    write_report({"toy": doc}, tmp_path / "report.html")
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        page = chrome.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: problems.append(f"network: {r.url}")
                if not r.url.startswith(("file:", "data:")) else None)
        page.goto((tmp_path / "report.html").as_uri())
        sizes = page.evaluate("""[...document.querySelectorAll('figure svg')].map(
            s => { const r = s.getBoundingClientRect(); return [r.width, r.height]; })""")
        cells = page.evaluate("""[...document.querySelectorAll("table[data-table='rank'] tr"
            + "[data-router]")].map(tr => ({router: tr.dataset.router,
              scenario: tr.dataset.scenario,
              rs: tr.querySelector("[data-metric='rank_score']").innerText,
              cost: tr.querySelector("[data-metric='avg_cost_per_10k']").innerText}))""")
        layout = page.evaluate("""(() => {
            const rank = document.querySelector("table[data-table='rank']");
            const top = s => document.querySelector(s).getBoundingClientRect().top;
            const lines = [...rank.querySelectorAll('td, td .sd')].flatMap(el =>
              [...el.childNodes].filter(n => n.nodeType === 3).map(n => {
                const range = document.createRange(); range.selectNodeContents(n);
                return new Set([...range.getClientRects()].map(r => r.top)).size; }));
            return {scroll: [rank.parentElement.scrollWidth, rank.parentElement.clientWidth],
                    page: [document.documentElement.scrollWidth, window.innerWidth],
                    headline: top("[data-block='headline']"),
                    figure: top("figure"), rank: top("table[data-table='rank']"),
                    first: document.querySelector("figure").dataset.figure,
                    lines: Math.max(...lines)}; })()""")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        chrome.close()
    assert problems == []
    assert len(sizes) == 3 and all(w > 100 and h > 100 for w, h in sizes)
    # the big table neither scrolls sideways nor wraps a cell at 1280 px
    assert layout["scroll"][0] <= layout["scroll"][1] and layout["page"][0] <= 1280
    assert layout["lines"] == 1, layout
    assert layout["headline"] < layout["figure"] < layout["rank"]
    assert layout["first"] == f"cost-accuracy-toy-{TUNED}"
    shown = {(c["router"], c["scenario"]): c for c in cells}
    for row in flat_rows(doc):
        cell = shown[(row["router"], row["scenario"])]
        assert " ".join(cell["rs"].split()) == pm(row, "rank_score", 2)
        assert " ".join(cell["cost"].split()) == pm(row, "avg_cost_per_10k", 3)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
