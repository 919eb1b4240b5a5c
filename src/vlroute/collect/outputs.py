"""The run folder collect writes: a set in the shared contract (``samples.jsonl``,
``outcomes.jsonl``, ``models.jsonl``, ``set.json``, ``images/``) plus ``costs.yaml`` (each
backend's configured prices, when it has them, and tier, which ``vlroute bench build`` picks
up), ``run.json``
(what the run did, and the measured latency, cost and energy per backend) and the journal.

``outcomes.jsonl`` has one row per (sample, backend) call, with ``score: null`` until
``vlroute judge run`` scores it, and the measured fields ``tokens_in``, ``tokens_out``,
``ttft_s``, ``latency_s``, ``cost_usd`` and ``energy_j`` (null where not measured), the HTTP
``status`` and the ``error`` of a failed call (whose ``response`` is null).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vlroute._io import write_json_atomic, write_text_atomic
from vlroute.collect.measured import backend_summary
from vlroute.collect.samples import Sample, SampleSet
from vlroute.serve.config import Backend

#: the measured fields of a collected outcome (the contract's optional fields)
MEASURED = ("tokens_in", "tokens_out", "ttft_s", "latency_s", "cost_usd", "energy_j")


def write_run(out: Path, source: SampleSet, samples: Sequence[Sample],
              backends: Sequence[Backend], done: Mapping[str, dict[str, Any]],
              report: dict[str, Any], exclude: Collection[str] = ()) -> dict[str, Any]:
    """Write (atomically, file by file) the set and the summary of the run folder ``out``;
    returns the per-backend summary. The results keyed in ``exclude`` (recorded for another
    request than the backend's current one) are left out, not relabelled."""
    out = Path(out)
    _copy_images(samples, out)
    write_jsonl(out / "samples.jsonl", [_sample_row(s) for s in samples])
    write_jsonl(out / "models.jsonl", [model_row(b) for b in backends])
    wanted = {s.sample_id for s in samples}
    models = {b.name: b.router_model or b.name for b in backends}
    entries = sorted((e for k, e in done.items() if e.get("sample_id") in wanted
                      and e.get("backend") in models and k not in exclude),
                     key=lambda e: (e["sample_id"], e["backend"]))
    # the bench id a backend has now (a config may have renamed its router_model)
    rows = [outcome_row({**e, "model": models[e["backend"]]}) for e in entries]
    write_jsonl(out / "outcomes.jsonl", _keep_scores(out / "outcomes.jsonl", rows))
    write_text_atomic(out / "costs.yaml", yaml.safe_dump({"models": {
        models[b.name]: _cost_entry(b) for b in backends}}, sort_keys=True))
    info = dict(source.info)
    write_json_atomic(out / "set.json", {
        "name": f"{source.name}-collected", "label": "graded", "raw_scale": [0, 10],
        "images": any(s.images for s in samples),
        "official_split": info.get("official_split"), "license": info.get("license"),
        "notes": "responses collected by `vlroute collect` from the backends of a gateway "
                 "config; score is null until `vlroute judge run` scores it (0-10)",
        "measured": list(MEASURED), "collected_from": str(source.source)})
    summary = {b.name: backend_summary([e for e in entries if e["backend"] == b.name], b)
               for b in backends}
    write_json_atomic(out / "run.json", {"schema": "vlroute-collect/1", **report,
                                         "backends": summary})
    return summary


def _cost_entry(backend: Backend) -> dict[str, Any]:
    """The catalog entry of a backend: its configured prices and tier; without prices in the
    config, only its tier (the catalog prices it, as it estimates its outcomes' cost)."""
    from vlroute.collect.run import has_prices

    if not has_prices(backend):
        return {"tier": backend.tier, "note": f"backend {backend.name!r} has no prices in "
                "its config: priced by the catalog"}
    return {"price": [backend.price_in_per_1m, backend.price_out_per_1m],
            "tier": backend.tier, "status": "config"}


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """JSON lines, written atomically."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def model_row(backend: Backend) -> dict[str, Any]:
    """The models.jsonl entry of a backend (its bench id: ``router_model``, else its name)."""
    return {"model": backend.router_model or backend.name, "display_name": backend.model,
            "family": backend.name, "params_b": None, "open_weights": backend.tier == "edge",
            "modality": "vision-language" if backend.vision else "text-only",
            "notes": f"collected from backend {backend.name!r} ({backend.base_url}, model "
                     f"{backend.model}, tier {backend.tier})"}


def outcome_row(entry: dict[str, Any]) -> dict[str, Any]:
    """The outcomes.jsonl row of a journal entry."""
    row = {"sample_id": entry["sample_id"], "model": entry["model"],
           "score": entry.get("score"), "raw_score": entry.get("raw_score"),
           "response": entry.get("response"), "prediction": None}
    row.update({k: entry.get(k) for k in MEASURED})
    row.update({"status": entry.get("status"), "error": entry.get("error"),
                "backend": entry.get("backend"), "attempts": entry.get("attempts"),
                "request_sha256": entry.get("fingerprint")})
    return row


#: what judging added to an outcome row
SCORED = ("score", "raw_score", "judge", "judge_error")


def _keep_scores(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the scores the run's outcomes already had for the same response to the
    same request (a collect run after ``judge run`` keeps its scores)."""
    if not path.is_file():
        return rows
    before: dict[tuple[str, str], dict[str, Any]] = {}
    # "\n" only: str.splitlines() would also cut at U+2028, U+0085, ... inside a response
    for line in path.read_text("utf-8").split("\n"):
        if not line.strip():
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            row = json.loads(line)
            before[(row["sample_id"], row["model"])] = row
    out = []
    for row in rows:
        old = before.get((row["sample_id"], row["model"]))
        if (old is not None and old.get("response") == row["response"]
                and old.get("request_sha256") in (None, row.get("request_sha256"))):
            row = {**row, **{k: old[k] for k in SCORED if k in old}}
        out.append(row)
    return out


def _sample_row(sample: Sample) -> dict[str, Any]:
    row = dict(sample.row)
    row.setdefault("dataset", "collected")
    row.setdefault("group", sample.sample_id)
    row["images"] = list(sample.images)
    return row


def _copy_images(samples: Sequence[Sample], out: Path) -> None:
    done: set[str] = set()
    for sample in samples:
        if sample.root.resolve() == out.resolve():
            continue                                 # collecting a run folder again
        for rel in sample.images:
            dst, src = out / rel, sample.root / rel
            if rel in done or (dst.is_file() and dst.stat().st_size == src.stat().st_size):
                continue
            done.add(rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


__all__ = ["MEASURED", "model_row", "outcome_row", "write_jsonl", "write_run"]
