from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from vlroute.cli import cli
from vlroute.evaluation import load_results


def run(*args: str) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_build_validate_describe_eval(toy_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = run("bench", "build", toy_set, "--out", out, "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "18 samples x 3 models" in result.output
    result = run("bench", "validate", out, "--json", tmp_path / "report.json")
    assert result.exit_code == 0 and "0 error(s)" in result.output
    assert json.loads((tmp_path / "report.json").read_text())["ok"] is True
    result = run("bench", "describe", out)
    assert result.exit_code == 0 and "Oracle quality" in result.output
    result = run("eval", out, "--routers", "baselines,singles", "--scenario", "fast",
                 "--scenario", "cost_weight=0.2", "--json", tmp_path / "rows.json",
                 "--results", tmp_path / "results.json", "--seeds", "2")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {r["router"] for r in rows} == {"oracle", "strongest_global", "cheapest_global",
                                           "strongest_per_dataset", "random",
                                           "best_single_by_rank"}
    for key in ("router", "scenario", "split", "avg_acc", "avg_cost_per_10k", "rank_score",
                "gap_closed", "rank_score_std", "apsp", "rcs"):
        assert key in rows[0]
    doc = load_results(tmp_path / "results.json")
    assert doc["schema"] == "vlroute-results/2" and len(doc["seeds"]) == 2
    assert {s["name"] for s in doc["scenarios"]} == {"fast", "cost_weight=0.2"}
    assert "single:small-2b" in result.output


def test_errors_are_one_clear_line(toy_set: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "build", str(toy_set), "--reader", "jsnol",
                                      "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "Did you mean: jsonl" in result.output
    result = CliRunner().invoke(cli, ["bench", "validate", str(tmp_path)])
    assert result.exit_code == 1 and "no manifest.json" in result.output
    run("bench", "build", toy_set, "--out", tmp_path / "b")
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "b"), "--scenario", "turbo"])
    assert result.exit_code == 1 and "Unknown scenario preset 'turbo'" in result.output
    result = CliRunner().invoke(cli, ["bench", "build", str(toy_set), "--out",
                                      str(tmp_path / "b")])
    assert result.exit_code == 1 and "already exists" in result.output


#: modules that only the extras other than [encoders] install: the README's demo command
#: installs ".[encoders]" alone, so the demo must run without them
_EXTRAS_ONLY = ("aiohttp", "fastapi", "uvicorn", "uvloop", "httptools", "pybase64",
                "psycopg", "onnxruntime", "ray", "rapidocr_onnxruntime", "openpyxl")
_DEMO = f"""
import sys
for name in {_EXTRAS_ONLY!r}:     # as if not installed: import fails, find_spec says None
    sys.modules[name] = None
from vlroute.cli import main
main()
"""


@dataclass
class _Result:
    exit_code: int
    output: str


def test_demo_runs_on_the_embedded_data(tmp_path: Path) -> None:
    # in a process where the packages of the other extras cannot be imported
    proc = subprocess.run([sys.executable, "-c", _DEMO, "demo", "--out", str(tmp_path / "demo"),
                           "--seeds", "2"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})
    result = _Result(proc.returncode, proc.stdout + proc.stderr)
    assert result.exit_code == 0, result.output
    assert "1500 samples x 14 models" in result.output
    doc = load_results(tmp_path / "demo" / "results.json")
    assert {s["name"] for s in doc["scenarios"]} == {"fast", "quality", "eco", "cost_weight@dev"}
    assert "best_single_by_rank" in result.output
    assert {r["router"] for r in doc["rows"]} >= {"knn", "mlp", "mf", "prknn", "oracle"}
    assert doc["tau_curves"][0]["pair"] == ["Qwen2-VL-7B-Instruct", "Qwen2-VL-72B-Instruct"]
    assert doc["features"]["image"] == "efficientnet-lite0@57934424"
    assert (tmp_path / "demo" / "router" / "router.json").is_file()
    report = tmp_path / "demo" / "report.html"
    assert f"Report: {report}" in result.output.replace("\n", "")
    assert report.stat().st_size > 50_000 and "data-figure" in report.read_text()
    assert (tmp_path / "demo" / "bench" / "features" / "minilm.npy").is_file()
    assert not (tmp_path / "demo" / ".staging").exists()


def test_features_then_learned_routers(toy_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    run("bench", "build", toy_set, "--out", out)
    result = run("features", out, "--text", "hashing-text", "--image", "hashing-image")
    assert result.exit_code == 0, result.output
    assert (out / "features" / "hashing-text.npy").is_file()
    result = run("eval", out, "--routers", "knn,linear,gbdt,oracle", "--features",
                 "hashing-text,hashing-image", "--param", "knn.n_neighbors=3",
                 "--param", "gbdt.n_estimators=5", "--scenario", "cost_weight@dev",
                 "--results", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    doc = load_results(tmp_path / "r.json")
    assert {c["router"] for c in doc["curves"]} == {"knn", "linear", "gbdt"}
    assert doc["features"]["text"] == "hashing-text-64"
    knn = next(r for r in doc["rows"] if r["router"] == "knn" and r["seed"] == 0)
    assert knn["cost_weight"] == doc["curves"][0]["selected"]
    result = CliRunner().invoke(cli, ["eval", str(out), "--routers", "knn", "--param", "knn"])
    assert result.exit_code != 0 and "ROUTER.KEY=VALUE" in result.output


def test_train_saves_an_artifact_with_the_dev_chosen_scenario(toy_set: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "bench"
    run("bench", "build", toy_set, "--out", out, "--split", "0.5,0.25,0.25")
    run("features", out, "--text", "hashing-text", "--image", "hashing-image")
    result = run("train", "knn", out, "--features", "hashing-text,hashing-image",
                 "--param", "n_neighbors=3", "--out", tmp_path / "art")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "art" / "router.json").read_text())
    assert doc["router"] == "knn" and doc["params"]["n_neighbors"] == 3
    assert doc["info"]["scenario_name"] == "cost_weight@dev"
    assert doc["feature_spec"]["text"] == "hashing-text-64"
    result = CliRunner().invoke(cli, ["train", "knn", str(out), "--features",
                                      "hashing-text,none", "--out", str(tmp_path / "art")])
    assert result.exit_code == 1 and "already exists" in result.output
    result = run("train", "knn", out, "--features", "hashing-text,hashing-image",
                 "--scenario", "tau=0.5,by=usd", "--target", "edge_share>=0.3",
                 "--out", tmp_path / "calibrated")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "calibrated" / "router.json").read_text())["info"]
    assert saved["scenario"].startswith("tau=") and "Calibrated on dev" in result.output
