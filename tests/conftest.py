"""Shared fixtures: small synthetic sets in the jsonl contract, and paths to the real data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_set(root: Path, *, n_groups: int = 6, per_group: int = 3, images: bool = True,
             models: list[dict[str, Any]] | None = None, official: bool = False) -> Path:
    """A tiny set folder in the shared contract with deterministic scores."""
    root.mkdir(parents=True, exist_ok=True)
    models = models or [
        {"model": "small-2b", "display_name": "Small", "family": "S", "params_b": 2,
         "open_weights": True, "modality": "vision-language", "notes": ""},
        {"model": "big-72b", "display_name": "Big", "family": "B", "params_b": 72,
         "open_weights": True, "modality": "vision-language", "notes": ""},
        {"model": "gpt-4o-2024-08-06", "display_name": "GPT-4o", "family": "GPT",
         "params_b": None, "open_weights": False, "modality": "vision-language", "notes": ""},
    ]
    samples, outcomes = [], []
    if images:
        (root / "images").mkdir(exist_ok=True)
    for g in range(n_groups):
        for v in range(per_group):
            sid = f"G{g}_v{v}"
            paths = []
            if images:
                paths = [f"images/{sid}.png"]
                Image.new("RGB", (64 + 8 * v, 48), (40 * g % 255, 90, 30 * v)).save(
                    root / paths[0])
            meta: dict[str, Any] = {}
            if official:
                meta["split"] = "test" if g == 0 else "train"
            samples.append({"sample_id": sid, "dataset": "Toy", "group": f"G{g}",
                            "task": ["algebra", "geometry"][g % 2],
                            "question": "What is shown? " * (1 + v), "images": paths,
                            "answer": str(g), "meta": meta})
            for k, m in enumerate(models):
                score = 1.0 if (g + v + k) % 3 != 0 or k == len(models) - 1 else 0.0
                outcomes.append({"sample_id": sid, "model": m["model"], "score": score,
                                 "raw_score": bool(score), "response": None,
                                 "prediction": None})
    write_jsonl(root / "samples.jsonl", samples)
    write_jsonl(root / "outcomes.jsonl", outcomes)
    write_jsonl(root / "models.jsonl", models)
    info = {"name": root.name, "label": "binary", "images": images,
            "official_split": "meta.split" if official else None, "license": "test"}
    (root / "set.json").write_text(json.dumps(info))
    return root


@pytest.fixture
def toy_set(tmp_path: Path) -> Path:
    return make_set(tmp_path / "toy")


def needs_shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "samples.jsonl").is_file():
        pytest.skip(f"shared data {name} not available")
    return path


def run_cli(*args: object) -> str:
    """``vlroute ARGS`` in-process; its output, after asserting it succeeded."""
    from click.testing import CliRunner

    from vlroute.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output
