"""RoutingMatrices: per-sample outcomes of every candidate model, as arrays."""

from __future__ import annotations

import mmap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from vlroute._typing import FloatArray, IntArray
from vlroute.errors import MatrixShapeError, UnknownComponentError

ObjArray = npt.NDArray[np.object_]
MATRIX_FIELDS = ("quality", "cost", "latency", "energy", "tokens_in", "tokens_out")
ROW_FIELDS = ("sample_ids", "groups", "datasets", "tasks", "splits")


class Mapping(mmap.mmap):
    """The memory map under an out-of-core matrix (made by
    :meth:`vlroute.data.bench.Bench.matrices`); :func:`release` touches no other map."""


def _mapping(arr: np.ndarray) -> Mapping | None:
    base: Any = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = base.base if isinstance(base, np.ndarray) else getattr(base, "obj", None)
    return base if isinstance(base, Mapping) else None


def is_mapped(arr: np.ndarray) -> bool:
    """Whether ``arr`` lives on an out-of-core matrix's memory map."""
    return _mapping(arr) is not None


def release(arr: np.ndarray) -> None:
    """Drop the pages of an out-of-core matrix (see :meth:`vlroute.data.bench.Bench.matrices`)
    from this process's resident memory: they stay in its file and the page cache and come
    back when read. Called after each full pass over one; any other array (one in memory, a
    map the caller made) is left alone."""
    buffer = _mapping(arr)
    if buffer is not None and hasattr(mmap, "MADV_DONTNEED"):
        buffer.madvise(mmap.MADV_DONTNEED)


def unloaded(shape: tuple[int, int], dtype: Any = np.float64) -> np.ndarray:
    """An all-NaN read-only view that takes no memory: a matrix field that was not loaded
    (see :attr:`RoutingMatrices.unloaded`)."""
    return np.broadcast_to(np.asarray(np.nan, dtype=dtype), shape)


#: rows per block of :func:`column_means`; a matrix of at most this many rows is averaged at once
MEAN_BLOCK = 1 << 16


def column_means(arr: np.ndarray, rows: npt.NDArray[np.bool_] | None = None) -> FloatArray:
    """Mean of each column over its values that are not NaN (NaN where it has none, without a
    warning), over ``rows`` (a mask) when given: ``np.nanmean(arr[rows], axis=0)``, a block of
    rows at a time past :data:`MEAN_BLOCK` rows so that a memory-mapped 2M x 50 matrix
    needs no full-size temporaries (sums in float64)."""
    n, m = arr.shape
    if n <= MEAN_BLOCK:
        part = arr if rows is None else arr[rows]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means: FloatArray = np.nanmean(part, axis=0).astype(np.float64)
        return means
    sums, counts = np.zeros(m), np.zeros(m)
    for start in range(0, n, MEAN_BLOCK):
        block = np.asarray(arr[start:start + MEAN_BLOCK], dtype=np.float64)
        if rows is not None:
            block = block[rows[start:start + MEAN_BLOCK]]
        present = ~np.isnan(block)
        sums += np.where(present, block, 0.0).sum(axis=0)
        counts += present.sum(axis=0)
    release(arr)
    with np.errstate(all="ignore"):
        out: FloatArray = np.where(counts > 0, sums / counts, np.nan)
    return out


def _take(arr: np.ndarray, rows: IntArray | npt.NDArray[np.bool_] | slice,
          cols: IntArray | None, empty: bool = False) -> np.ndarray:
    """``arr[rows]`` or ``arr[rows, cols]``; an ``empty`` (unloaded) field stays a view."""
    if empty:
        shape = np.empty(arr.shape[:1], dtype=bool)[rows].shape + \
            ((arr.shape[1],) if cols is None else (len(cols),))
        return unloaded(shape, arr.dtype)
    return arr[rows] if cols is None else arr[rows, cols]


@dataclass(frozen=True, eq=False)
class RoutingMatrices:
    """Outcomes of ``models`` (columns) on ``sample_ids`` (rows).

    Every matrix is (n_samples, n_models) float64 (float32 and memory-mapped on benches too
    large for memory, see :meth:`vlroute.data.bench.Bench.matrices`) with NaN where a pair was
    not evaluated (a field not loaded is an all-NaN view that keeps no memory):
    ``quality`` in [0, 1], ``cost`` in USD per request, ``latency`` in seconds, ``energy`` in
    joules, ``tokens_in`` / ``tokens_out`` counts. Row labels (``groups``, ``datasets``,
    ``tasks``, ``splits``) are object arrays of length n_samples; ``tiers`` gives each model's
    tier ("edge" or "cloud").
    """

    sample_ids: ObjArray
    models: tuple[str, ...]
    quality: FloatArray
    cost: FloatArray
    latency: FloatArray
    energy: FloatArray
    tokens_in: FloatArray
    tokens_out: FloatArray
    groups: ObjArray
    datasets: ObjArray
    tasks: ObjArray
    splits: ObjArray
    tiers: tuple[str, ...]
    #: ``quality`` holds rates of binary outcomes (e.g. group means of 0/1 labels), not
    #: graded scores: P(solved) is the quality itself
    rates: bool = False
    #: matrix fields that were not loaded: all-NaN views of no memory (:func:`unloaded`),
    #: kept so through subsets and pickling
    unloaded: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        n, m = len(self.sample_ids), len(self.models)
        for name in MATRIX_FIELDS:
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != (n, m):
                shape = getattr(arr, "shape", None)
                raise MatrixShapeError(f"{name} has shape {shape}; expected ({n}, {m}) "
                                       "= (n_samples, n_models)")
        for name in ROW_FIELDS[1:]:
            if len(getattr(self, name)) != n:
                raise MatrixShapeError(f"{name} has {len(getattr(self, name))} entries; "
                                       f"expected one per sample ({n})")
        if len(self.tiers) != m:
            raise MatrixShapeError(f"tiers has {len(self.tiers)} entries; expected {m}")
        if len(set(self.models)) != m:
            raise MatrixShapeError("model ids must be unique")

    def __getstate__(self) -> dict[str, Any]:
        # an unloaded field travels as its dtype, not as n x m NaNs (Ray pickles matrices)
        state = dict(self.__dict__)
        for name in self.unloaded:
            state[name] = getattr(self, name).dtype
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        shape = (len(state["sample_ids"]), len(state["models"]))
        for name in state.get("unloaded", ()):
            state[name] = unloaded(shape, state[name])
        self.__dict__.update(state)

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return len(self.sample_ids)

    @property
    def n_models(self) -> int:
        """Number of columns."""
        return len(self.models)

    def subset(self, rows: IntArray | npt.NDArray[np.bool_]) -> RoutingMatrices:
        """The matrices restricted to ``rows`` (indices or a boolean mask)."""
        changes: dict[str, Any] = {}
        for name in (*MATRIX_FIELDS, *ROW_FIELDS):
            changes[name] = _take(getattr(self, name), rows, None, name in self.unloaded)
            release(getattr(self, name))           # one mapped matrix resident at a time
        return replace(self, **changes)

    def split(self, name: str) -> RoutingMatrices:
        """The rows whose split is ``name`` ("train", "dev" or "test")."""
        return self.subset(self.splits == name)

    def with_splits(self, splits: ObjArray) -> RoutingMatrices:
        """A copy with other split labels (e.g. another seed's)."""
        return replace(self, splits=np.asarray(splits, dtype=object))

    def model_index(self, model: str) -> int:
        """Column of ``model``."""
        try:
            return self.models.index(model)
        except ValueError:
            raise UnknownComponentError(f"Unknown model {model!r}. Available: "
                                        f"{', '.join(self.models)}.") from None

    def group_means(self) -> RoutingMatrices:
        """Denoised labels: each row's quality replaced by its group's mean quality per
        model (the groups the grouped split keeps together: DynaMath's 10 variants of one
        question). For binary labels the result holds success rates (``rates``)."""
        codes = np.unique(self.groups.astype(str), return_inverse=True)[1]
        n_groups = int(codes.max()) + 1 if len(codes) else 0
        finite = np.isfinite(self.quality)
        sums = np.zeros((n_groups, self.n_models))
        counts = np.zeros((n_groups, self.n_models))
        np.add.at(sums, codes, np.where(finite, self.quality, 0.0))
        np.add.at(counts, codes, finite)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts
        quality = np.where(finite, means[codes], np.nan)
        values = self.quality[finite]
        binary = bool(np.isin(values, (0.0, 1.0)).all())
        return replace(self, quality=quality, rates=self.rates or binary)

    def select_models(self, models: Sequence[str]) -> RoutingMatrices:
        """The matrices restricted to ``models``, in that order."""
        cols = np.array([self.model_index(m) for m in models], dtype=np.int64)
        changes: dict[str, Any] = {}
        for name in MATRIX_FIELDS:
            changes[name] = _take(getattr(self, name), slice(None), cols,
                                  name in self.unloaded)
            release(getattr(self, name))
        return replace(self, models=tuple(models), tiers=tuple(self.tiers[c] for c in cols),
                       **changes)

    def matrix(self, dimension: str) -> FloatArray:
        """The cost matrix of a scenario's cost dimension: "usd", "latency" or "energy"."""
        names = {"usd": "cost", "latency": "latency", "energy": "energy"}
        if dimension not in names:
            raise ValueError(f"Unknown cost dimension {dimension!r}; expected usd, latency "
                             "or energy.")
        arr: FloatArray = getattr(self, names[dimension])
        return arr

