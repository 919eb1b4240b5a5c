"""Fusing text and image vectors into one feature matrix (VL-RouterBench's fusion modes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from vlroute._typing import FloatArray

Mode = Literal["concat", "normalize_concat", "weighted", "text", "image"]
MODES = ("concat", "normalize_concat", "weighted", "text", "image")


def _l2(x: FloatArray) -> FloatArray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: FloatArray = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return out


@dataclass(frozen=True)
class Fusion:
    """How text (n, d_t) and image (n, d_i) vectors become one (n, d) matrix.

    ``normalize_concat`` L2-normalises each part before concatenating; ``weighted`` concatenates
    the normalised parts scaled by ``text_weight`` and 1 - ``text_weight`` (a weighted average
    needs equal widths, which encoders rarely share); ``text`` / ``image`` keep one part.
    """

    mode: Mode = "normalize_concat"
    text_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Unknown fusion {self.mode!r}; expected one of {', '.join(MODES)}.")

    def __call__(self, text: FloatArray | None, image: FloatArray | None) -> FloatArray:
        parts = {"text": text, "image": image}
        if self.mode in ("text", "image"):
            chosen = parts[self.mode]
            if chosen is None:
                raise ValueError(f"Fusion {self.mode!r} needs {self.mode} features.")
            return np.asarray(chosen, dtype=np.float64)
        present = [np.asarray(p, dtype=np.float64) for p in (text, image) if p is not None]
        if not present:
            raise ValueError("No features to fuse.")
        if self.mode == "concat":
            return np.hstack(present)
        if self.mode == "normalize_concat":
            return np.hstack([_l2(p) for p in present])
        weights = [self.text_weight, 1.0 - self.text_weight]
        pairs = [(w, p) for w, p in zip(weights, (text, image), strict=True) if p is not None]
        return np.hstack([w * _l2(np.asarray(p, dtype=np.float64)) for w, p in pairs])


def fuse_outputs(parts: dict[str, FloatArray], mode: Mode, text_weight: float) -> FloatArray:
    """Feature rows from encoders' outputs as a request is served: each output rounded to
    float32 (as the bench stores features, so that a request decides as its bench row did),
    then fused; with one encoder, its part alone."""
    rounded = {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in parts.items()}
    if "text" not in rounded or "image" not in rounded:
        mode = "text" if "text" in rounded else "image"
    return Fusion(mode, text_weight)(rounded.get("text"), rounded.get("image"))
