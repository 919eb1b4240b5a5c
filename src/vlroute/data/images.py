"""The image table of a bench: every image reference with its size, bytes and hash."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pandas as pd
from PIL import Image, UnidentifiedImageError

from vlroute.errors import DataError

IMAGE_COLUMNS = ("sample_idx", "position", "path", "width", "height", "size_source", "bytes",
                 "sha256")


def stays_inside(rel: str) -> bool:
    """Whether an image reference is a relative path that stays inside its folder: not
    absolute, no drive, no ``..`` (in POSIX or Windows spelling)."""
    return bool(rel) and not any(
        pure.is_absolute() or pure.anchor or ".." in pure.parts
        for pure in (PurePosixPath(rel), PureWindowsPath(rel)))


def bench_image_path(rel: str) -> str:
    """Where a source image reference lives inside a bench: ``images/<path>``, without
    doubling a leading ``images/`` of the source."""
    return "images/" + rel.removeprefix("images/")


def copy_image(src: Path, dst: Path) -> None:
    """Copy (never hard-link: editing the bench must not change the source)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _seen_size(meta: dict[str, Any]) -> tuple[float, float] | None:
    """The size the models saw, when the source recorded it (``meta.source_image_size``)."""
    size = meta.get("source_image_size")
    if isinstance(size, list | tuple) and len(size) == 2 and all(
            isinstance(v, int | float) and v > 0 for v in size):
        return float(size[0]), float(size[1])
    return None


def _file_facts(path: Path) -> tuple[int, int, int, str]:
    data = path.read_bytes()
    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}).") from exc
    return width, height, len(data), hashlib.sha256(data).hexdigest()


def image_table(samples: pd.DataFrame, image_root: Path | None, bench_root: Path
                ) -> pd.DataFrame:
    """Resolve, measure and copy every image of ``samples`` into ``bench_root/images``.

    A missing or unreadable image fails the build with the sample id and path.
    """
    rows: list[dict[str, Any]] = []
    facts: dict[str, tuple[int, int, int, str]] = {}
    has_images = samples["images"].map(len) > 0
    for idx in samples.index[has_images]:
        paths = [str(p) for p in samples.at[idx, "images"]]  # type: ignore[union-attr]
        meta_text = samples.at[idx, "meta"]
        meta = json.loads(str(meta_text)) if meta_text else {}
        seen = _seen_size(meta) if len(paths) == 1 else None
        for pos, rel in enumerate(paths):
            if rel not in facts:
                if not stays_inside(rel):   # the readers refuse these; a third-party one may not
                    raise DataError(f"Sample {samples.at[idx, 'sample_id']!r}: image path "
                                    f"{rel!r} must be relative to the source folder and stay "
                                    "inside it (no absolute path, no '..').")
                src = (image_root or Path(".")) / rel
                if not src.is_file():
                    raise DataError(f"Sample {samples.at[idx, 'sample_id']!r}: image {rel!r} "
                                    f"not found under {image_root}.")
                facts[rel] = _file_facts(src)
                copy_image(src, bench_root / bench_image_path(rel))
            width, height, size, digest = facts[rel]
            rows.append({"sample_idx": int(idx), "position": pos,
                         "path": bench_image_path(rel),
                         "width": seen[0] if seen else float(width),
                         "height": seen[1] if seen else float(height),
                         "size_source": "meta.source_image_size" if seen else "file",
                         "bytes": size, "sha256": digest})
    return pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))
