"""Integrity report of a bench: errors (contract violations) and warnings (gaps).

Errors: missing columns, duplicate ids, scores outside [0, 1], records of unknown samples or
models, unreadable images, a group straddling splits. Warnings: missing (sample, model) pairs,
null task or answer, one image shared by two groups, an empty split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from vlroute.data.bench import Bench

_SAMPLE_REQUIRED = ("sample_id", "dataset", "group", "split_group", "question", "split")
_RECORD_REQUIRED = ("sample_idx", "model_idx", "score", "cost_usd", "latency_s", "energy_j")


@dataclass
class Report:
    """Findings of :func:`validate_bench`; ``ok`` is true when there are no errors."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"ok": self.ok, "errors": self.errors, "warnings": self.warnings,
                "stats": self.stats}


def _columns(report: Report, columns: list[str], required: tuple[str, ...], table: str
             ) -> bool:
    missing = [c for c in required if c not in columns]
    if missing:
        report.errors.append(f"{table}: missing column(s) {', '.join(missing)}")
    return not missing


def _check_records(report: Report, bench: Bench) -> None:
    """Ids in range, no repeated pair (a bit per pair), scores in [0, 1]; read a row group
    at a time, so a bench of any size is checked in bounded memory."""
    n, m = len(bench.samples), len(bench.models)
    seen = np.zeros(n * m, dtype=bool)
    counts = np.zeros(m, dtype=np.int64)
    dup = out_of_range = 0
    first_out: int | None = None
    row = 0
    for part in bench.record_parts(["score"]):
        s_idx = part["sample_idx"].astype(np.int64)
        m_idx = part["model_idx"].astype(np.int64)
        bad = (s_idx < 0) | (s_idx >= n) | (m_idx < 0) | (m_idx >= m)
        if bad.any():
            report.errors.append(f"records: {int(bad.sum())} row(s) refer to unknown samples or "
                                 f"models (first at row {row + int(np.flatnonzero(bad)[0])})")
            return
        pair = s_idx * m + m_idx
        unique = np.unique(pair)
        dup += len(pair) - len(unique) + int(seen[unique].sum())
        seen[unique] = True
        score = np.asarray(part["score"], dtype=float)
        out = ~((score >= 0) & (score <= 1))
        out_of_range += int(out.sum())
        if first_out is None and out.any():
            first_out = row + int(np.flatnonzero(out)[0])
        counts += np.bincount(m_idx, minlength=m)
        row += len(pair)
    if dup:
        report.errors.append(f"records: {dup} duplicate (sample, model) pair(s)")
    if out_of_range:
        report.errors.append(f"records: {out_of_range} score(s) outside [0, 1] or missing "
                             f"(first at row {first_out})")
    coverage = {str(name): round(float(c) / max(n, 1), 6)
                for name, c in zip(bench.models["model"], counts, strict=True)}
    report.stats["model_coverage"] = coverage
    missing = n * m - (row - dup)
    report.stats["missing_pairs"] = int(missing)
    if missing:
        low = sorted(coverage, key=coverage.__getitem__)[:3]
        report.warnings.append(f"{missing} of {n * m} (sample, model) pairs are missing "
                               f"(lowest coverage: {', '.join(low)})")


def _check_samples(report: Report, bench: Bench) -> None:
    s = bench.samples
    dup = s["sample_id"].duplicated()
    if dup.any():
        report.errors.append(f"samples: {int(dup.sum())} duplicate sample_id(s), e.g. "
                             f"{s['sample_id'][dup].iloc[0]!r}")
    for col in ("task", "answer"):
        nulls = int(s[col].isna().sum()) if col in s else len(s)
        if nulls:
            report.warnings.append(f"samples: {nulls} sample(s) with a null {col}")
    sizes = {k: int(s["split"].eq(k).sum()) for k in ("train", "dev", "test")}
    report.stats["split_sizes"] = sizes
    for name, size in sizes.items():
        if size == 0:
            report.warnings.append(f"split {name!r} is empty")
    for col in ("group", "split_group"):
        per = s.groupby(col)["split"].nunique()
        leaking = per[per > 1]
        if len(leaking):
            report.errors.append(f"{len(leaking)} {col}(s) straddle splits, e.g. "
                                 f"{leaking.index[0]!r}")


def _check_images(report: Report, bench: Bench, decode: bool) -> None:
    img = bench.images
    report.stats["images"] = len(img)
    unreadable = []
    for rel in img["path"].unique():
        path = bench.root / rel
        try:
            with Image.open(path) as handle:
                if decode:
                    handle.load()
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            unreadable.append(f"{rel} ({type(exc).__name__})")
    if unreadable:
        report.errors.append(f"{len(unreadable)} unreadable image(s): "
                             f"{', '.join(unreadable[:5])}")
    if len(img):
        groups = bench.samples["group"].to_numpy(dtype=object)[img["sample_idx"].to_numpy()]
        shared = pd.Series(groups).groupby(img["sha256"].to_numpy()).nunique()
        n_shared = int((shared > 1).sum())
        if n_shared:
            report.warnings.append(f"{n_shared} image(s) are shared by two or more groups; "
                                   "the split keeps those groups together")


def validate_bench(bench: Bench, *, decode_images: bool = False) -> Report:
    """Check a loaded bench; ``decode_images`` fully decodes every image (slower)."""
    report = Report()
    report.stats["samples"] = len(bench.samples)
    report.stats["models"] = len(bench.models)
    ok_s = _columns(report, list(bench.samples.columns), _SAMPLE_REQUIRED, "samples")
    ok_r = _columns(report, bench.record_columns(), _RECORD_REQUIRED, "records")
    if ok_r:
        _check_records(report, bench)
    if ok_s:
        _check_samples(report, bench)
    _check_images(report, bench, decode_images)
    return report
