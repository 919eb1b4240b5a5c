"""Agreement of a judge's scores with reference (human) scores, both on the 0-10 scale.

Pure functions of two equal-length arrays: Spearman's rank correlation, Cohen's weighted
kappa with quadratic weights, mean absolute error, and the confusion table of "solved"
(score >= MES) under both, each with a percentile bootstrap interval. Many responses share
a question (every model answers it), and they are not independent: given ``groups`` (the
sample id of each pair) the bootstrap resamples whole groups (a cluster bootstrap), else
single pairs.

Quadratic kappa weighs a disagreement by the squared difference of the two scores' values
(not of category indices), so it applies to any scale mapped to 0-10 (Vibe-Eval's 1-5 becomes
0, 2.5, 5, 7.5, 10): kappa = 1 - sum (a_i - b_i)^2 / ((1/n) sum_i sum_j (a_i - b_j)^2), which
is Cohen's quadratic weighted kappa when the values are equally spaced categories: on integer
0-10 scores, scikit-learn's ``cohen_kappa_score(weights="quadratic", labels=range(11))`` (not
without ``labels``, which weighs by the rank among the values present).

>>> import numpy as np
>>> a = np.array([0, 2, 5, 8, 10.0]); quadratic_kappa(a, a)
1.0
>>> round(spearman(a, a[::-1]), 3)
-1.0
>>> mae(a, a + 1)
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vlroute._typing import FloatArray

Metric = Callable[[FloatArray, FloatArray], float]


def _ranks(x: FloatArray) -> FloatArray:
    """Ranks from 1, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks, minlength=len(values))
    counts = np.bincount(inverse, minlength=len(values))
    return np.asarray((sums / counts)[inverse], dtype=float)


def spearman(judge: FloatArray, human: FloatArray) -> float:
    """Spearman's rho (Pearson correlation of average ranks); NaN when either is constant."""
    a, b = _ranks(np.asarray(judge, float)), _ranks(np.asarray(human, float))
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def quadratic_kappa(judge: FloatArray, human: FloatArray) -> float:
    """Cohen's weighted kappa with quadratic weights (see the module docstring); NaN when
    the expected disagreement is 0 (both constant and equal)."""
    a, b = np.asarray(judge, float), np.asarray(human, float)
    observed = float(np.mean((a - b) ** 2))
    # E over independent draws: mean_i mean_j (a_i - b_j)^2, without the n x n matrix
    expected = float(np.mean(a ** 2) + np.mean(b ** 2) - 2 * np.mean(a) * np.mean(b))
    return 1.0 - observed / expected if expected > 0 else float("nan")


def mae(judge: FloatArray, human: FloatArray) -> float:
    """Mean absolute difference of the scores."""
    return float(np.mean(np.abs(np.asarray(judge, float) - np.asarray(human, float))))


def confusion_at_mes(judge: FloatArray, human: FloatArray, mes: float) -> dict[str, int]:
    """Counts of (judge, human) solved (score >= ``mes``) outcomes: ``both``, ``judge_only``,
    ``human_only``, ``neither``."""
    j, h = np.asarray(judge, float) >= mes, np.asarray(human, float) >= mes
    return {"both": int((j & h).sum()), "judge_only": int((j & ~h).sum()),
            "human_only": int((~j & h).sum()), "neither": int((~j & ~h).sum())}


def solved_agreement(judge: FloatArray, human: FloatArray, mes: float) -> float:
    """Share of pairs on which both say the same about "solved" at ``mes``."""
    return float(np.mean((np.asarray(judge, float) >= mes) == (np.asarray(human, float) >= mes)))


def bootstrap_interval(metric: Metric, judge: FloatArray, human: FloatArray, *,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                       groups: Sequence[object] | None = None
                       ) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of ``metric`` (seeded): over resampled pairs, or, given
    ``groups`` (one label per pair, e.g. its sample id), over resampled groups, each drawn
    group bringing all its pairs (a cluster bootstrap). Resamples where the metric is
    undefined are dropped, and None is returned when all are."""
    a, b = np.asarray(judge, float), np.asarray(human, float)
    rng = np.random.default_rng(seed)
    clusters: list[np.ndarray] | None = None
    if groups is not None:
        if len(groups) != len(a):
            raise ValueError(f"groups has {len(groups)} labels for {len(a)} pairs; expected "
                             "one label per pair.")
        _, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse))[:-1]
        clusters = np.split(order, bounds)
    values = []
    for _ in range(n_boot):
        if clusters is None:
            rows = rng.integers(0, len(a), len(a))
        else:
            rows = np.concatenate([clusters[c] for c in rng.integers(0, len(clusters),
                                                                     len(clusters))])
        value = metric(a[rows], b[rows])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return None, None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def agreement(judge: FloatArray, human: FloatArray, *, mes: float = 6.0, n_boot: int = 1000,
              level: float = 0.95, seed: int = 0, groups: Sequence[object] | None = None
              ) -> dict[str, Any]:
    """Every agreement statistic with its bootstrap interval (resampling ``groups`` when
    given, else pairs), and the confusion at ``mes``."""
    a, b = np.asarray(judge, float), np.asarray(human, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"judge and human scores must be 1-D and of one length; got "
                         f"{a.shape} and {b.shape}.")
    if len(a) < 2:
        raise ValueError(f"agreement needs at least 2 scored pairs; got {len(a)}.")
    metrics: dict[str, Metric] = {
        "spearman": spearman, "quadratic_kappa": quadratic_kappa, "mae": mae,
        "solved_agreement": lambda x, y: solved_agreement(x, y, mes)}
    out: dict[str, Any] = {"n": len(a), "mes": mes, "metrics": {}}
    for name, fn in metrics.items():
        value = fn(a, b)
        low, high = bootstrap_interval(fn, a, b, n_boot=n_boot, level=level, seed=seed,
                                       groups=groups)
        out["metrics"][name] = {"value": value if np.isfinite(value) else None,
                                "ci": [low, high]}
    out["confusion"] = confusion_at_mes(a, b, mes)
    out["bootstrap"] = {"n_boot": n_boot, "level": level, "seed": seed,
                        "unit": "pair" if groups is None else "group",
                        "groups": None if groups is None else len({str(g) for g in groups})}
    return out


__all__ = ["agreement", "bootstrap_interval", "confusion_at_mes", "mae", "quadratic_kappa",
           "solved_agreement", "spearman"]
