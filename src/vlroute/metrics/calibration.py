"""Calibration of predicted quality: does P(solved) = 0.7 mean solved 7 times in 10?"""

from __future__ import annotations

import numpy as np

from vlroute._typing import FloatArray


def expected_calibration_error(predicted: FloatArray, observed: FloatArray,
                               bins: int = 10) -> float:
    """Expected calibration error over every (request, model) pair with an outcome: the
    predictions are put in ``bins`` equal-width bins of [0, 1], and the bins' gaps between
    mean prediction and mean outcome are averaged, weighted by their counts. Outcomes may be
    0/1 (then this is the ECE of P(solved)) or graded in [0, 1] (of the expected score). NaN
    where there is no pair.

    >>> expected_calibration_error(np.array([[0.9, 0.1]]), np.array([[1.0, 0.0]]))
    0.1
    """
    p, y = np.asarray(predicted, float).ravel(), np.asarray(observed, float).ravel()
    if p.shape != y.shape:
        raise ValueError(f"predicted has {p.size} values, observed {y.size}; expected the "
                         "same (n_requests, n_models) shape.")
    keep = np.isfinite(p) & np.isfinite(y)
    p, y = np.clip(p[keep], 0.0, 1.0), y[keep]
    if not len(p):
        return float("nan")
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    gaps = np.abs(np.bincount(which, p, bins) - np.bincount(which, y, bins))
    return round(float(gaps.sum() / counts.sum()), 12)
