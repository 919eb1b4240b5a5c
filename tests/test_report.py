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
from vlroute.report import write_report
from vlroute.report.tables import pm
from vlroute.scenarios import PRESETS, TUNED, parse_scenario

ARTIFACTS = Path(os.environ.get("VLROUTE_TEST_ARTIFACTS", "build/test-artifacts"))
THREE = [{"model": m, "display_name": m, "family": "F", "params_b": p, "open_weights": True,
          "modality": "vision-language", "notes": ""}
         for m, p in (("Qwen2-VL-7B-Instruct", 7), ("Qwen2-VL-72B-Instruct", 72),
                      ("gpt-4o-2024-08-06", None))]


def results(tmp_path: Path, *, images: bool = True, graded: bool = False,
            datasets: int = 1) -> dict[str, Any]:
    root = make_set(tmp_path / "set", n_groups=12, per_group=3, images=images, models=THREE)
    if graded or datasets > 1:
        _rewrite(root, graded, datasets)
    bench = build_bench(READERS.get("jsonl")(root, tmp_path / ".w"), tmp_path / "bench")
    X = np.random.default_rng(0).normal(size=(len(bench.samples), 8))
    doc = evaluate_bench(bench, EvalSpec(
        routers=("oracle", "best_single_by_rank", "cheapest_global", "knn", "prototype"),
        scenarios=(parse_scenario(TUNED), PRESETS["quality"]), seeds=2, features=X,
        feature_spec={"dim": 8}, params={"knn": {"n_neighbors": 5}}))
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


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    required = os.environ.get("VLROUTE_BROWSER_TEST") == "require"
    if browser is None and not required:
        pytest.skip("no Chromium here (apt-get install chromium)")
    assert browser, "VLROUTE_BROWSER_TEST=require but no chromium on PATH"
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    doc = results(tmp_path)
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
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        chrome.close()
    assert problems == []
    assert len(sizes) == 3 and all(w > 100 and h > 100 for w, h in sizes)
    shown = {(c["router"], c["scenario"]): c for c in cells}
    for row in flat_rows(doc):
        cell = shown[(row["router"], row["scenario"])]
        assert cell["rs"] == pm(row, "rank_score", 2)
        assert cell["cost"] == pm(row, "avg_cost_per_10k", 3)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
