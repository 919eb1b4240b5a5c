"""Grouped, seeded train / dev / test splits.

Samples that share a group always land in the same split. Groups are shuffled with a seeded
PCG64 generator over their sorted names, so a split depends only on the data and the seed,
never on the machine or the row order of the source.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vlroute.errors import DataError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class SplitSpec:
    """How to split: fractions, seed, stratification, and whether an official split is kept.

    With an official split (``meta.split`` in the source), its test part stays test and dev is
    carved out of its train part at the ratio dev / (train + dev).
    """

    seed: int = 42
    train: float = 0.7
    dev: float = 0.1
    test: float = 0.2
    stratify: bool = False
    honour_official: bool = True

    def __post_init__(self) -> None:
        parts = (self.train, self.dev, self.test)
        if min(parts) < 0 or abs(sum(parts) - 1.0) > 1e-9:
            raise DataError(f"Split fractions {parts} must be non-negative and sum to 1.")


def merge_groups(groups: Sequence[str], links: Iterable[tuple[str, str]]) -> list[str]:
    """Union groups that must travel together (e.g. two groups showing the same image).

    Returns, per sample, the name of its merged group (the smallest member name).
    """
    parent: dict[str, str] = {g: g for g in groups}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for a, b in links:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(g) for g in groups]


def _split_groups(group_names: npt.NDArray[np.object_], sizes: npt.NDArray[np.int64],
                  fractions: tuple[float, float, float], rng: np.random.Generator
                  ) -> npt.NDArray[np.object_]:
    """Split label per group: shuffled groups fill train, then dev, then test."""
    order = np.argsort(group_names, kind="stable")
    order = order[rng.permutation(len(order))]
    total = float(sizes.sum())
    bounds = np.array([fractions[0] * total, (fractions[0] + fractions[1]) * total]) - 1e-9
    start = np.cumsum(sizes[order]) - sizes[order]   # samples placed before each group
    labels = np.array(SPLITS, dtype=object)[np.searchsorted(bounds, start, side="right")]
    out = np.empty(len(order), dtype=object)
    out[order] = labels
    return out


def assign_splits(groups: Sequence[str], spec: SplitSpec = SplitSpec(), *,
                  datasets: Sequence[str] | None = None,
                  official: Sequence[str | None] | None = None) -> npt.NDArray[np.object_]:
    """One of "train" / "dev" / "test" per sample.

    Parameters
    ----------
    groups : sequence of str
        Group of each sample; a group never straddles two splits.
    spec : SplitSpec
        Fractions, seed, stratification.
    datasets : sequence of str, optional
        Dataset of each sample, used when ``spec.stratify``.
    official : sequence of str or None, optional
        An official split label per sample ("train" / "test" / None).
    """
    groups_arr = np.asarray(groups, dtype=object)
    out = np.empty(len(groups_arr), dtype=object)
    rng = np.random.default_rng(spec.seed)
    pools: list[tuple[npt.NDArray[np.bool_], tuple[float, float, float]]] = []
    if official is not None and spec.honour_official and any(v is not None for v in official):
        off = np.asarray([v if v is not None else "train" for v in official], dtype=object)
        is_test = off == "test"
        _check_official_groups(groups_arr, is_test)
        out[is_test] = "test"
        keep = spec.train + spec.dev
        pools.append((~is_test, (spec.train / keep, spec.dev / keep, 0.0) if keep else
                      (1.0, 0.0, 0.0)))
    else:
        pools.append((np.ones(len(groups_arr), dtype=bool), (spec.train, spec.dev, spec.test)))
    strata = np.asarray(datasets, dtype=object) if (spec.stratify and datasets is not None) \
        else np.zeros(len(groups_arr), dtype=object)
    for mask, fractions in pools:
        for stratum in sorted(set(strata[mask].tolist()), key=str):
            rows = mask & (strata == stratum)
            names, inverse, sizes = np.unique(groups_arr[rows].astype(str), return_inverse=True,
                                              return_counts=True)
            labels = _split_groups(names.astype(object), sizes, fractions, rng)
            out[rows] = labels[inverse]
    return out


def _check_official_groups(groups: npt.NDArray[np.object_], is_test: npt.NDArray[np.bool_]
                           ) -> None:
    both = set(groups[is_test].tolist()) & set(groups[~is_test].tolist())
    if both:
        example = sorted(map(str, both))[0]
        raise DataError(f"{len(both)} group(s) appear in both the official test split and the "
                        f"rest (e.g. {example!r}); a group must not straddle splits.")
