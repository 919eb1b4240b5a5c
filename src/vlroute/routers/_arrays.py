"""Small array helpers shared by the routers."""

from __future__ import annotations

import numpy as np

from vlroute._typing import FloatArray


def unit_rows(X: FloatArray) -> FloatArray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    out: FloatArray = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    return out


def standardiser(X: FloatArray) -> dict[str, np.ndarray]:
    """Column mean and scale of ``X`` (scale 1 for constant columns)."""
    scale = X.std(axis=0)
    return {"mean": X.mean(axis=0), "scale": np.where(scale > 0, scale, 1.0)}
