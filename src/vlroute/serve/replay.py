"""Replaying a bench split through the gateway, to prove that it serves what ``vlroute eval
--artifact`` measured: the requests (each sample's question and images, as a client would
send them), a gateway config with one backend per bundle candidate, and the comparison of the
gateway's choices with the decisions file. Used by ``bench/replay.py`` and the tests."""

from __future__ import annotations

import base64
import json
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlroute.data.bench import Bench

#: decisions whose margin is below this may flip on float rounding between the two paths
TIE = 1e-6


def replay_requests(bench: Bench, sample_ids: list[str], model: str = "vlroute/auto"
                    ) -> Iterator[tuple[str, dict[str, Any]]]:
    """(sample id, chat request body) for each sample: its question as the user turn's
    text and its images as data URLs, in the bench's order."""
    images: dict[int, list[str]] = {}
    for idx, rel in zip(bench.images["sample_idx"], bench.images["path"], strict=True):
        images.setdefault(int(idx), []).append(str(rel))
    row_of = {str(s): i for i, s in enumerate(bench.samples["sample_id"])}
    for sid in sample_ids:
        i = row_of[sid]
        parts: list[dict[str, Any]] = [{"type": "text",
                                        "text": str(bench.samples["question"].iloc[i])}]
        for rel in images.get(i, []):
            path = bench.root / rel
            mime = mimetypes.guess_type(path.name)[0] or "image/png"
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}})
        yield sid, {"model": model, "messages": [{"role": "user", "content": parts}]}


def replay_config(artifact: Path, candidates: list[str], text_encoder: str | None,
                  image_encoder: str | None, telemetry: str) -> dict[str, Any]:
    """A gateway config with one backend per bundle candidate (named after its model), the
    feature cache off, and nothing that could leave a backend out."""
    return {"backends": [{"name": m, "base_url": f"http://backend-{k}.invalid/v1", "model": m,
                          "router_model": m} for k, m in enumerate(candidates)],
            "router": {"artifact": str(artifact), "text_encoder": text_encoder,
                       "image_encoder": image_encoder, "cache_size": 0},
            "default_scenario": "auto", "limits": {"max_images": 64},
            "telemetry": {"url": telemetry}}


def read_decisions(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``vlroute eval --decisions`` file."""
    return [json.loads(line) for line in Path(path).read_text("utf-8").splitlines() if line]


def compare(decisions: list[dict[str, Any]], served: dict[str, str]) -> dict[str, Any]:
    """Eval's choices against the gateway's (sample id -> model): how many agree, and the
    disagreements, split into near-ties (margin below :data:`TIE`) and real ones."""
    ties: list[dict[str, Any]] = []
    real: list[dict[str, Any]] = []
    for row in decisions:
        got = served.get(row["sample_id"])
        if got == row["model"]:
            continue
        item = {"sample_id": row["sample_id"], "eval": row["model"], "gateway": got,
                "margin": row["margin"]}
        (ties if row["margin"] is not None and row["margin"] < TIE else real).append(item)
    n = len(decisions)
    return {"samples": n, "equal": n - len(ties) - len(real), "near_ties": ties,
            "disagreements": real}
