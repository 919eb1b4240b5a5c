"""The ``lmms_eval`` reader: ``--log_samples`` output of lmms-eval (formats.md section 2).

Accepts the current layout (``<model>/<date>_samples_<task>.jsonl`` beside
``<date>_results.json``), lm-evaluation-harness's order (``samples_<task>_<date>.jsonl`` with
``results_<date>.json``) and the legacy per-run folder (``<task>.json`` with a ``logs`` list
beside ``results.json``). Per-sample correctness is read from the task's ``metric_list`` keys:
numbers as they are; objects through the task's ``score_key`` (default ``score``), then
``acc``, ``correct``, ``hit`` or ``match``; samples with neither are counted as unscored, not
wrong. ``token_counts`` become measured ``tokens_in`` / ``tokens_out``. The logs hold no
images (only ``input_media`` names), so samples carry none and the report says so.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlroute._io import sha256_file
from vlroute.data.readers._checks import iter_jsonl, read_json_object
from vlroute.data.tables import SourceTables, models_from_names
from vlroute.errors import ReaderError

NEW = re.compile(r"^(?P<date>\d{8}_\d{6})_samples_(?P<task>.+)\.jsonl$")
OLD = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[\d\-.]+)\.jsonl$")
FALLBACK_KEYS = ("acc", "correct", "hit", "match")


def _json(path: Path) -> dict[str, Any]:
    return read_json_object(path)


def _model(results: dict[str, Any], folder: Path) -> str:
    if results.get("model_name"):
        return str(results["model_name"])
    args = str((results.get("config") or {}).get("model_args") or "")
    for key in ("pretrained", "model", "model_name", "model_id", "path", "engine"):
        found = re.search(rf"(?:^|,){key}=([^,]+)", args)
        if found:
            return found.group(1)
    return folder.name.replace("__", "/")


def _metric_keys(results: dict[str, Any], task: str) -> tuple[list[str], str]:
    config = (results.get("configs") or {}).get(task) or {}
    keys = [str(m["metric"]) for m in config.get("metric_list") or [] if "metric" in m]
    if not keys:
        keys = [k.split(",")[0] for k in (results.get("results") or {}).get(task, {})
                if "," in k and "_stderr" not in k]
    return keys, str(config.get("score_key") or "score")


def _score(line: dict[str, Any], keys: list[str], score_key: str) -> float | None:
    for key in keys:
        value = line.get(key)
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, dict):
            for inner in (score_key, *FALLBACK_KEYS):
                if isinstance(value.get(inner), int | float | bool):
                    return float(value[inner])
    return None


def _text(value: Any) -> str | None:
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _tokens(counts: Any, key: str) -> float:
    if not isinstance(counts, list):
        return math.nan
    values = [float(c[key]) for c in counts if isinstance(c, dict) and c.get(key) is not None]
    return float(sum(values)) if values else math.nan


def _answer(target: Any) -> str | None:
    text = _text(target)
    if text and text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)
            if isinstance(parsed, list) and parsed:
                return str(parsed[0])
        except (ValueError, SyntaxError):
            pass
    return text


def _runs(src: Path) -> list[tuple[Path, str, Path, list[dict[str, Any]] | None]]:
    """(samples file, task, results file, legacy logs) for every run under ``src``."""
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    out: list[tuple[Path, str, Path, list[dict[str, Any]] | None]] = []
    for path in files:
        match = NEW.match(path.name) or OLD.match(path.name)
        if match:
            date = match["date"]
            results = path.parent / (f"{date}_results.json" if NEW.match(path.name)
                                     else f"results_{date}.json")
            out.append((path, match["task"], results, None))
        elif path.suffix == ".json" and path.name != "results.json" \
                and (path.parent / "results.json").is_file():
            data = _json(path)
            if isinstance(data.get("logs"), list):
                out.append((path, path.stem, path.parent / "results.json", data["logs"]))
    return out


def _lines(path: Path, legacy: list[dict[str, Any]] | None
           ) -> Iterator[tuple[int, dict[str, Any]]]:
    if legacy is not None:
        yield from ((k + 1, item) for k, item in enumerate(legacy) if isinstance(item, dict))
    else:
        yield from iter_jsonl(path)


def read_lmms_eval(src: Path, staging: Path) -> SourceTables:
    """Read every model x task of lmms-eval sample logs under ``src``."""
    src = Path(src)
    runs = _runs(src)
    if not runs:
        raise ReaderError(src, None, "no lmms-eval sample logs found (<date>_samples_<task>"
                                     ".jsonl, samples_<task>_<date>.jsonl or <task>.json)")
    samples: dict[str, dict[str, Any]] = {}
    outcomes: list[dict[str, Any]] = []
    report, sources = [], []
    for path, task, results_path, legacy in runs:
        results = _json(results_path) if results_path.is_file() else {}
        model = _model(results, path.parent)
        keys, score_key = _metric_keys(results, task)
        counts = {"lines": 0, "scored": 0, "unscored": 0, "repeated": 0}
        seen: set[int] = set()
        for number, line in _lines(path, legacy):
            counts["lines"] += 1
            if not isinstance(line.get("doc_id"), int):
                raise ReaderError(path, f"line {number}", "missing integer 'doc_id'")
            doc_id = int(line["doc_id"])
            if doc_id in seen:  # one line per filter: the first filter's line is used
                counts["repeated"] += 1
                continue
            seen.add(doc_id)
            score = _score(line, keys, score_key)
            if score is None:
                counts["unscored"] += 1
                continue
            if not 0.0 <= score <= 1.0:
                raise ReaderError(path, f"line {number}",
                                  f"per-sample score {score} of metric {keys} is outside "
                                  "[0, 1]; vlroute needs a correctness or a score in [0, 1]")
            counts["scored"] += 1
            sid = f"{task}/{doc_id}"
            samples.setdefault(sid, {
                "sample_id": sid, "dataset": task, "group": sid, "task": task,
                "question": _text(line.get("input")) or "", "images": [],
                "answer": _answer(line.get("target")),
                "meta": json.dumps({"doc_id": doc_id, "doc_hash": line.get("doc_hash"),
                                    "input_media": line.get("input_media")})})
            outcomes.append({
                "sample_id": sid, "model": model, "score": score,
                "raw_score": json.dumps({k: line.get(k) for k in keys if k in line}),
                "response": _text(line.get("resps", line.get("filtered_resps"))),
                "prediction": _text(line.get("filtered_resps")),
                "tokens_in": _tokens(line.get("token_counts"), "input_tokens"),
                "tokens_out": _tokens(line.get("token_counts"), "output_tokens")})
        rel = str(path.relative_to(src)) if src.is_dir() else path.name
        sources.append({"path": rel, "sha256": sha256_file(path), "model": model, "task": task,
                        "lmms_eval_version": str(results.get("lmms_eval_version", "")),
                        "git_hash": str(results.get("git_hash", ""))})
        report.append(f"{model} / {task} ({rel}): {counts['lines']} lines, {counts['scored']} "
                      f"scored by {', '.join(keys) or '?'}, {counts['unscored']} unscored, "
                      f"{counts['repeated']} repeated doc_ids (extra filters); no images in "
                      "the logs")
    if not outcomes:
        raise ReaderError(src, None, "the sample logs hold no scored lines")
    frame = pd.DataFrame(outcomes)
    order = sorted(samples, key=lambda s: (s.rpartition("/")[0], int(s.rpartition("/")[2])))
    frame = frame.sort_values("sample_id", key=lambda col: col.map(order.index), kind="stable")
    for col in ("tokens_in", "tokens_out"):
        frame[col] = frame[col].astype(float).where(np.isfinite(frame[col]), np.nan)
    models = sorted(frame["model"].unique().tolist())
    return SourceTables(name=src.stem if src.is_file() else src.name, reader="lmms_eval",
                        samples=pd.DataFrame([samples[s] for s in order]),
                        outcomes=frame.reset_index(drop=True),
                        models=models_from_names(models),
                        info={"name": src.name, "label": "unknown"}, image_root=None,
                        sources=sources, report=report)
