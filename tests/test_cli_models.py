"""``vlroute models add``: a new model in a serving bundle from a few labelled samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import make_set, run_cli

from vlroute.cli import cli
from vlroute.routers.bundle import load_bundle

MODELS = [{"model": name, "display_name": name, "family": "F", "params_b": size,
           "open_weights": True, "modality": "vision-language", "notes": ""}
          for name, size in (("small-2b", 2), ("big-72b", 72), ("mid-7b", 7),
                             ("gpt-4o-2024-08-06", None))]


def _bench(tmp_path: Path) -> Path:
    root = make_set(tmp_path / "set", n_groups=12, per_group=4, models=MODELS)
    out = tmp_path / "bench"
    run_cli("bench", "build", root, "--out", out, "--split", "0.5,0.25,0.25")
    run_cli("features", out, "--text", "hashing-text", "--image", "hashing-image")
    return out


def test_models_add_extends_a_bundle_without_retraining(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    old = ["small-2b", "big-72b", "gpt-4o-2024-08-06"]
    run_cli("train", "irt", bench, "--features", "hashing-text,hashing-image", "--models",
            ",".join(old), "--param", "max_epochs=30", "--out", tmp_path / "b")
    text = (tmp_path / "set" / "outcomes.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    mine = [r for r in rows if r["model"] == "mid-7b"][:20]
    (tmp_path / "new.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mine))
    out = run_cli("models", "add", tmp_path / "b", "mid-7b", "--outcomes",
                  tmp_path / "new.jsonl", "--bench", bench, "--price", "0.1,0.4",
                  "--tier", "edge", "--out", tmp_path / "b2")
    assert "Added mid-7b (edge) from 20 labelled samples" in out
    before, after = load_bundle(tmp_path / "b"), load_bundle(tmp_path / "b2")
    assert after.models == (*before.models, "mid-7b") and "mid-7b" in after.candidates
    added = after.section["added_models"][0]
    assert added["n_labelled"] == 20 and added["cost_from"]["tokens_in"] == "bench mean"
    assert after.section["catalog"]["mid-7b"]["price_status"] == "user"
    assert len(after.section["mean_cost"]["usd"]) == 4
    X = np.random.default_rng(0).normal(size=(5, after.router.n_features_in_))
    p_old = before.predictions(X, before.scenario)
    p_new = after.predictions(X, after.scenario)
    assert np.allclose(p_new[:, :3], p_old) and p_new.shape == (5, 4)
    old_low, old_high = before.section["cost_bounds_usd"]
    usd = added["mean_cost"]["usd"]
    assert old_low <= usd <= old_high                       # a mid-priced model ...
    assert after.section["cost_bounds_usd"] == [old_low, old_high]   # ... moves no bound
    info = json.loads((tmp_path / "b2" / "router.json").read_text())["info"]
    assert info["extended"] == ["mid-7b"] and 0 <= info["dev"]["edge_share"] <= 1
    assert info["dev"]["before_added_models"] == json.loads(
        (tmp_path / "b" / "router.json").read_text())["info"]["dev"]


def test_models_add_refuses_bad_input(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    run_cli("train", "knn", bench, "--features", "hashing-text,hashing-image", "--out",
            tmp_path / "knn")
    run_cli("train", "irt", bench, "--features", "hashing-text,hashing-image", "--models",
            "small-2b,big-72b", "--param", "max_epochs=10", "--out", tmp_path / "irt")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"sample_id": "G1_v1", "score": 1.0}) + "\n")
    run_cli("train", "prknn", bench, "--features", "hashing-text,hashing-image", "--out",
            tmp_path / "prknn")
    cases = [
        (tmp_path / "knn", good, "0.1,0.2", "irt and mf"),
        (tmp_path / "prknn", good, "0.1,0.2", "a prknn bundle"),
        (tmp_path / "irt", good, "0.1", "expected IN,OUT"),
        (tmp_path / "irt", good, "-1,0.2", "price must be a number >= 0"),
    ]
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"sample_id": "nope", "score": 1.0}) + "\n")
    cases.append((tmp_path / "irt", unknown, "0.1,0.2", "not in the bench"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"sample_id": "G1_v1", "score": 7}) + "\n")
    cases.append((tmp_path / "irt", bad, "0.1,0.2", "bad.jsonl:1: score must be"))
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"sample_id": "G1_v1", "model": "x", "score": 1}) + "\n")
    cases.append((tmp_path / "irt", other, "0.1,0.2", "no outcomes of model 'mid-7b'"))
    for name, rows, message in (
            ("twice", [{"sample_id": "G1_v1", "score": 1}, {"sample_id": "G1_v1", "score": 0}],
             "twice.jsonl:2: sample 'G1_v1' again (first on line 1)"),
            ("negative", [{"sample_id": "G1_v1", "score": 1, "tokens_in": -5}],
             "negative.jsonl:1: tokens_in must be a finite number >= 0"),
            ("graded", [{"sample_id": "G1_v1", "score": 0.5}], "must be 0 or 1 too")):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cases.append((tmp_path / "irt", path, "0.1,0.2", message))
    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"sample_id": "G1_v1", "score": 1, "latency_s": NaN}\n')
    cases.append((tmp_path / "irt", nan, "0.1,0.2", "latency_s must be a finite number"))
    for bundle, outcomes, price, message in cases:
        result = CliRunner().invoke(cli, ["models", "add", str(bundle), "mid-7b",
                                          "--outcomes", str(outcomes), "--bench", str(bench),
                                          "--price", price, "--tier", "edge", "--out",
                                          str(tmp_path / "x")])
        assert result.exit_code != 0 and message in " ".join(result.output.split()), \
            (message, result.output)
        assert not (tmp_path / "x").exists()
