"""The ``vlmevalkit`` reader: a VLMEvalKit work directory (or one model / run folder of it).

Per-sample correctness comes from the evaluation files (formats.md 1.4): MCQ
``<model>_<dataset>_<judge>_result.*`` (``hit``; circular datasets join on ``g_index``), Y/N
``*_auxmatch.*`` (``score``) and VQA ``*_results.*`` (``eval_score``, or the metric's own rule
for ANLS and relaxed-accuracy sets). Question text and base64 images come from the dataset TSV
``<dataset>.tsv``, looked up in ``$LMUData`` and in ``LMUData/`` folders beside or above SRC;
images are written out as files. The three directory layouts (flat, ``T<date>_G<hash>``,
``T<date>-<time>`` with ``status.json``) are accepted; symlinks are read once; pickles are not
read. An ``image_path`` must be relative to ``images/<dataset>/`` beside the TSV and stay
inside it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlroute._io import sha256_file
from vlroute.data.readers._checks import read_json_object, relative_image_path
from vlroute.data.readers._files import (
    decode_image,
    literal_list,
    load_table,
    lower_columns,
    missing,
    norm_index,
    read_delimited,
)
from vlroute.data.tables import SourceTables, models_from_names
from vlroute.errors import ReaderError

EVAL_ID = re.compile(r"^T\d{8}(-\d{6}|_G[0-9a-fA-F]+)$")
KNOWN_TAGS = ("exact_matching", "gpt-4o-mini", "chatgpt-0125", "gpt-4-0125", "openai", "gpt4")
CIRCULAR = ("mmbench", "ccbench", "circular", "mmcr")
ANLS = ("docvqa", "infovqa")
MAX_MATCH = ("chartqa", "ocrvqa")
FAILED = "Failed to obtain answer"


@dataclass
class _Found:
    """One per-sample evaluation file and what it belongs to."""

    path: Path
    model: str
    dataset: str
    kind: str            # "mcq" | "yorn" | "vqa"
    run: str
    judge: str | None = None
    status: dict[str, Any] = field(default_factory=dict)


def _status(folder: Path) -> dict[str, Any]:
    return read_json_object(folder / "status.json", missing_ok=True)


def _split_mcq(head: str, datasets: list[str]) -> tuple[str, str] | None:
    """``<dataset>_<judge tag>`` -> (dataset, tag), using known datasets or known tags."""
    for ds in sorted(datasets, key=len, reverse=True):
        if head.startswith(ds + "_"):
            return ds, head[len(ds) + 1:]
    for tag in KNOWN_TAGS:
        if head.endswith("_" + tag) and len(head) > len(tag) + 1:
            return head[: -len(tag) - 1], tag
    ds, _, tag = head.rpartition("_")
    return (ds, tag) if ds else None


def _classify(path: Path, model: str, datasets: list[str]) -> tuple[str, str, str | None] | None:
    stem = path.stem
    if not stem.startswith(model + "_"):
        return None
    rest = stem[len(model) + 1:]
    if rest.endswith("_auxmatch"):
        return rest[: -len("_auxmatch")], "yorn", None
    if rest.endswith("_results"):
        return rest[: -len("_results")], "vqa", None
    if rest.endswith("_result"):
        head = rest[: -len("_result")]
        if head.endswith(("_vanilla_circ0", "_vanilla_all")):
            return None
        split = _split_mcq(head, datasets)
        return (split[0], "mcq", split[1]) if split else None
    return None


def _discover(src: Path) -> list[_Found]:
    found: dict[str, _Found] = {}
    for folder, _dirs, files in os.walk(src):
        here = Path(folder)
        status = _status(here)
        run = here.name if EVAL_ID.match(here.name) else ""
        model = str(status.get("model_name") or (here.parent.name if run else here.name))
        datasets = list((status.get("datasets") or {}).keys())
        for name in sorted(files):
            path = here / name
            if path.suffix.lower() not in (".xlsx", ".tsv", ".csv", ".json", ".pkl"):
                continue
            kind = _classify(path, model, datasets)
            if kind is None:
                continue
            real = str(path.resolve())
            candidate = _Found(path, model, kind[0], kind[1], run, kind[2], status)
            if real not in found or (candidate.run and not found[real].run):
                found[real] = candidate
    return _latest(list(found.values()))


def _latest(files: list[_Found]) -> list[_Found]:
    """One file per (model, dataset): the latest run, the status' judge, a readable format."""
    best: dict[tuple[str, str], _Found] = {}

    def rank(f: _Found) -> tuple[Any, ...]:
        judge = ((f.status.get("datasets") or {}).get(f.dataset) or {}).get("judge_model")
        return (f.run, f.judge == judge, f.path.suffix.lower() != ".pkl")

    for f in files:
        key = (f.model, f.dataset)
        if key not in best or rank(f) > rank(best[key]):
            best[key] = f
    return sorted(best.values(), key=lambda f: (f.model, f.dataset))


def _tsv_path(src: Path, dataset: str) -> Path | None:
    roots = [Path(os.environ["LMUData"])] if os.environ.get("LMUData") else []
    for parent in [src, *src.parents][:4]:
        roots += [parent / "LMUData", parent]
    for root in roots:
        for name in (f"{dataset}.tsv", f"{dataset}_local.tsv"):
            if (root / name).is_file():
                return root / name
    return None


def _row_score(row: pd.Series, kind: str, dataset: str) -> float | None:
    if kind == "mcq":
        value = row.get("hit")
    elif kind == "yorn":
        value = row.get("score")
    else:
        match = literal_list(row.get("eval_match"))
        low = dataset.lower()
        if match and any(k in low for k in ANLS):
            value = 1.0 - min(float(v) for v in match)
            value = 0.0 if value < 0.5 else value
        elif match and any(k in low for k in MAX_MATCH):
            value = max(float(v) for v in match)
        else:
            value = row.get("eval_score")
            if missing(value) and match:
                value = float(np.mean([float(v) for v in match]))
    if missing(value):
        return None
    if isinstance(value, str):
        value = {"true": 1.0, "false": 0.0}.get(value.strip().lower(), value)
    return float(value)  # type: ignore[arg-type]


def _question(row: dict[str, Any]) -> str:
    parts = []
    if not missing(row.get("hint")):
        parts.append(f"Hint: {row['hint']}")
    parts.append("" if missing(row.get("question")) else str(row["question"]))
    options = [f"{k}. {row[k]}" for k in "ABCDEFGHIJ" if k in row and not missing(row[k])]
    if options:
        parts.append("Options:\n" + "\n".join(options))
    return "\n".join(parts)


class _Dataset:
    """The dataset TSV: rows by normalised index, images written out on demand."""

    def __init__(self, name: str, path: Path | None, staging: Path) -> None:
        self.name, self.path, self.staging = name, path, staging
        self.rows: dict[str, dict[str, Any]] = {}
        if path is not None:
            try:
                frame = read_delimited(path, sep="\t", dtype=str, keep_default_na=True)
            except (OSError, ValueError) as exc:
                raise ReaderError(path, None, f"cannot read the dataset TSV ({exc})") from exc
            if "index" not in frame.columns:
                raise ReaderError(path, "row 1", "missing column 'index' in the dataset TSV")
            for record in frame.to_dict("records"):
                self.rows[norm_index(record["index"])] = {str(k): v for k, v in record.items()}
        self._images: dict[str, list[str]] = {}

    def _encoded(self, index: str, depth: int = 0) -> list[str]:
        value = self.rows[index].get("image")
        if missing(value):
            return []
        items = literal_list(value)
        if items is not None:
            return [str(v) for v in items]
        text = str(value)
        if len(text) <= 64 and depth < 3:  # a reference to another row's image
            ref = norm_index(text)
            if ref not in self.rows:
                raise ReaderError(self.path, f"index {index}",
                                  f"image refers to row {text!r}, which is not in the TSV")
            return self._encoded(ref, depth + 1)
        return [text]

    def images(self, index: str) -> list[str]:
        """Paths (relative to the staging folder) of the row's images, written once."""
        if index in self._images:
            return self._images[index]
        out = []
        for k, text in enumerate(self._encoded(index)):
            try:
                data, ext = decode_image(text)
            except ValueError as exc:
                raise ReaderError(self.path, f"index {index}", f"image {k}: {exc}") from exc
            rel = f"images/{self.name}/{index}_{k}{ext}"
            (self.staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.staging / rel).write_bytes(data)
            out.append(rel)
        if not out and not missing(self.rows[index].get("image_path")) and self.path:
            for k, name in enumerate(literal_list(self.rows[index]["image_path"])
                                     or [self.rows[index]["image_path"]]):
                source = self.path.parent / "images" / self.name / relative_image_path(
                    str(name), path=self.path, where=f"index {index}")
                if source.is_file():
                    rel = f"images/{self.name}/{index}_{k}{source.suffix}"
                    (self.staging / rel).parent.mkdir(parents=True, exist_ok=True)
                    (self.staging / rel).write_bytes(source.read_bytes())
                    out.append(rel)
        self._images[index] = out
        return out


def read_vlmevalkit(src: Path, staging: Path) -> SourceTables:
    """Read every model x dataset of a VLMEvalKit output tree under ``src``."""
    src = Path(src)
    files = _discover(src)
    if not files:
        raise ReaderError(src, None, "no VLMEvalKit per-sample evaluation files found "
                                     "(*_<judge>_result, *_auxmatch or *_results tables)")
    staging.mkdir(parents=True, exist_ok=True)
    datasets: dict[str, _Dataset] = {}
    samples: dict[str, dict[str, Any]] = {}
    outcomes: list[dict[str, Any]] = []
    report, sources = [], []
    for f in files:
        if f.dataset not in datasets:
            datasets[f.dataset] = _Dataset(f.dataset, _tsv_path(src, f.dataset), staging)
        ds = datasets[f.dataset]
        frame = lower_columns(load_table(f.path))
        key = "g_index" if (f.kind == "mcq" and "g_index" in frame.columns
                            and any(c in f.dataset.lower() for c in CIRCULAR)) else "index"
        if key not in frame.columns:
            raise ReaderError(f.path, "row 1", f"missing column {key!r}")
        counts = {"rows": 0, "joined": 0, "unjoined": 0, "unscored": 0, "failed": 0}
        for number, raw in enumerate(frame.to_dict("records"), start=2):
            row = {str(k): v for k, v in raw.items()}
            counts["rows"] += 1
            score = _row_score(pd.Series(row), f.kind, f.dataset)
            if score is None:
                counts["unscored"] += 1
                continue
            if not 0.0 <= score <= 1.0:
                raise ReaderError(f.path, f"row {number}", f"correctness {score} is outside "
                                                          "[0, 1]")
            index = norm_index(row[key])
            sid = f"{f.dataset}/{index}"
            joined = index in ds.rows
            counts["joined" if joined else "unjoined"] += 1
            if sid not in samples:
                base = ds.rows.get(index, row)
                samples[sid] = {
                    "sample_id": sid, "dataset": f.dataset, "group": sid,
                    "task": next((str(base[c]) for c in ("category", "l2-category")
                                  if not missing(base.get(c))), None),
                    "question": _question(base),
                    "images": ds.images(index) if joined else [],
                    "answer": None if missing(base.get("answer")) else str(base["answer"]),
                    "meta": json.dumps({"index": index, "split": None if missing(
                        base.get("split")) else str(base["split"])}),
                }
            prediction = None if missing(row.get("prediction")) else str(row["prediction"])
            counts["failed"] += bool(prediction and prediction.startswith(FAILED))
            outcomes.append({"sample_id": sid, "model": f.model, "score": score,
                             "raw_score": json.dumps(row.get("hit", row.get("score")),
                                                     default=str),
                             "response": prediction, "prediction": None})
        rel = str(f.path.relative_to(src)) if f.path.is_relative_to(src) else str(f.path)
        sources.append({"path": rel, "sha256": sha256_file(f.path), "model": f.model,
                        "dataset": f.dataset, "run": f.run, "judge": f.judge or "",
                        "commit": str(f.status.get("commit", ""))})
        report.append(f"{f.model} / {f.dataset} ({rel}): {counts['rows']} rows, "
                      f"{counts['joined']} joined to the TSV, {counts['unjoined']} not, "
                      f"{counts['unscored']} without correctness, {counts['failed']} failed "
                      "inferences" + ("" if ds.path else "; dataset TSV not found: no images"))
    if not outcomes:
        raise ReaderError(src, None, "the evaluation files hold no scored rows")
    models = sorted({o["model"] for o in outcomes})
    return SourceTables(name=src.name, reader="vlmevalkit", samples=pd.DataFrame(
        list(samples.values())), outcomes=pd.DataFrame(outcomes), models=models_from_names(
        models), info={"name": src.name, "label": "binary"}, image_root=staging,
        sources=sources, report=report)
