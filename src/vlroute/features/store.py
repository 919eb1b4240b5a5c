"""Features stored beside a bench: ``DIR/features/<name>.npy`` row-aligned with the samples,
and ``DIR/features/index.json`` naming each array's encoder, width and the samples it covers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlroute._io import atomic_path, read_utf8, write_json_atomic
from vlroute._typing import FloatArray
from vlroute.data.bench import Bench
from vlroute.errors import BenchError
from vlroute.features.base import Encoder, FeatureCache, Item
from vlroute.features.fusion import Fusion


def bench_items(bench: Bench) -> list[Item]:
    """One :class:`Item` per sample: question text and image files inside the bench."""
    paths: dict[int, list[Path]] = {}
    for idx, rel in zip(bench.images["sample_idx"], bench.images["path"], strict=True):
        paths.setdefault(int(idx), []).append(bench.root / str(rel))
    return [Item(str(q), tuple(paths.get(i, ()))) for i, q in enumerate(bench.samples["question"])]


def _ids_digest(bench: Bench) -> str:
    return hashlib.sha256("\n".join(bench.samples["sample_id"].astype(str)).encode()).hexdigest()


def compute_features(bench: Bench, encoders: dict[str, Encoder], *, cache_dir: Path | None = None,
                     progress: Callable[[str, int, int], None] | None = None) -> None:
    """Encode every sample with each encoder and store the arrays under ``DIR/features``."""
    items = bench_items(bench)
    cache = FeatureCache(cache_dir) if cache_dir else None
    folder = bench.root / "features"
    folder.mkdir(exist_ok=True)
    index = _read_index(bench)
    for name, encoder in encoders.items():
        def step(done: int, total: int, _name: str = name) -> None:
            if progress:
                progress(_name, done, total)

        vectors = encoder.encode(items, cache=cache, progress=step)
        with atomic_path(folder / f"{name}.npy") as tmp:
            with tmp.open("wb") as handle:
                np.save(handle, vectors.astype(np.float32))
        index[name] = {"encoder_id": encoder.encoder_id, "modality": encoder.modality,
                       "dim": int(vectors.shape[1]), "samples": len(items),
                       "sample_ids_sha256": _ids_digest(bench)}
        write_json_atomic(folder / "index.json", index)


def _read_index(bench: Bench) -> dict[str, Any]:
    path = bench.root / "features" / "index.json"
    if not path.is_file():
        return {}
    try:
        index = json.loads(read_utf8(path))
    except (OSError, ValueError) as exc:      # unreadable, not UTF-8 or not JSON
        raise BenchError(f"{path}: not a readable feature index ({exc}); recompute the "
                         "features with `vlroute features`.") from None
    if not isinstance(index, dict):
        raise BenchError(f"{path}: expected a JSON object; recompute the features with "
                         "`vlroute features`.")
    return index


def load_feature_arrays(bench: Bench, names: Sequence[str]) -> dict[str, FloatArray]:
    """Stored arrays by name; refuses arrays computed for other samples."""
    index = _read_index(bench)
    out = {}
    for name in names:
        if name not in index:
            raise BenchError(f"{bench.root}: no features named {name!r} (have: "
                             f"{', '.join(index) or 'none'}); run `vlroute features`.")
        if index[name]["sample_ids_sha256"] != _ids_digest(bench):
            raise BenchError(f"{bench.root}: features {name!r} were computed for other "
                             "samples; recompute them.")
        out[name] = np.load(bench.root / "features" / f"{name}.npy").astype(np.float64)
    return out


def feature_matrix(bench: Bench, text: str | None, image: str | None,
                   fusion: Fusion | None = None) -> tuple[FloatArray, dict[str, Any]]:
    """The fused (n_samples, d) matrix and its spec (encoder ids, fusion, width)."""
    fusion = fusion or Fusion()
    names = [n for n in (text, image) if n]
    if not names:
        raise BenchError(f"{bench.root}: no features asked for (text and image both 'none'); "
                         "learned routers need stored text or image features, e.g. "
                         "minilm,efficientnet-lite0.")
    arrays = load_feature_arrays(bench, names)
    index = _read_index(bench)
    mode = fusion.mode if (text and image) else ("text" if text else "image")
    X = Fusion(mode, fusion.text_weight)(arrays.get(text) if text else None,
                                         arrays.get(image) if image else None)
    spec = {"text": index[text]["encoder_id"] if text else None,
            "image": index[image]["encoder_id"] if image else None,
            "fusion": mode, "text_weight": fusion.text_weight, "dim": int(X.shape[1])}
    return X, spec
