"""Served traffic as training data: telemetry rows with a feedback score become a set folder
in the shared data contract (samples.jsonl, outcomes.jsonl, models.jsonl, set.json), which
``vlroute bench build`` reads like any other set.

Only requests whose prompt was stored (``telemetry.store_prompts: true``) can be exported;
images are not stored, so the exported samples are text only. Each request was answered by
one model, so each sample has one outcome: the bench is sparse, and a router learns from it
what the scores say about the model that answered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlroute._io import atomic_directory
from vlroute.serve.telemetry import TelemetryStore


def export_scored(store: TelemetryStore, out: Path, *, include_unscored: bool = False,
                  overwrite: bool = False) -> dict[str, int]:
    """Write the set folder ``out``; returns counts of exported and skipped rows."""
    rows = [r for r in store.rows() if r["status"] == 200 and r["chosen"]]
    counts = {"exported": 0, "unscored": 0, "no_prompt": 0}
    samples: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for r in rows:
        if r["score"] is None and not include_unscored:
            counts["unscored"] += 1
            continue
        if not r["prompt"]:
            counts["no_prompt"] += 1
            continue
        samples.append({"sample_id": r["id"], "dataset": "served", "group": r["id"],
                        "task": r["scenario"], "question": r["prompt"], "images": [],
                        "answer": None, "meta": {"ts": r["ts"], "key_id": r["key_id"]}})
        outcomes.append({"sample_id": r["id"], "model": r["chosen"], "score": r["score"],
                         "raw_score": r["score"], "response": None, "prediction": None,
                         "tokens_in": r["tokens_in"], "tokens_out": r["tokens_out"],
                         "cost_usd": r["cost_usd"],
                         "latency_s": None if r["total_ms"] is None else r["total_ms"] / 1e3})
        counts["exported"] += 1
    models = sorted({o["model"] for o in outcomes})
    with atomic_directory(Path(out), overwrite=overwrite) as staging:
        _jsonl(staging / "samples.jsonl", samples)
        _jsonl(staging / "outcomes.jsonl", outcomes)
        _jsonl(staging / "models.jsonl", [
            {"model": m, "display_name": m, "family": m, "params_b": None,
             "open_weights": False, "modality": "vision-language",
             "notes": "a gateway backend"} for m in models])
        (staging / "set.json").write_text(json.dumps({
            "name": Path(out).name, "label": "graded", "raw_scale": [0, 1], "images": False,
            "official_split": None, "license": "operator's own traffic",
            "notes": "exported from vlroute gateway telemetry; scores from /v1/feedback"},
            indent=1) + "\n")
    return counts


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
