"""Where an evaluation's jobs run: here, one after the other (:class:`LocalExecutor`), or as
Ray tasks on a local instance or a cluster (:class:`RayExecutor`, the ``[ray]`` extra).

An executor maps ``fn(job, *shared)`` over the jobs and returns the results in job order;
``shared`` (the seeds' matrices, the spec with its feature arrays, the bounds) is the same
for every job, so Ray stores it once and every task reads it from the object store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from vlroute._optional import require
from vlroute._ray import connect

Note = Callable[[str], None]


class Executor(Protocol):
    """Runs jobs; results in job order."""

    def map(self, fn: Callable[..., Any], jobs: Sequence[Any], *shared: Any,
            note: Note | None = None) -> list[Any]: ...


class LocalExecutor:
    """Every job in this process, in order."""

    def map(self, fn: Callable[..., Any], jobs: Sequence[Any], *shared: Any,
            note: Note | None = None) -> list[Any]:
        out = []
        for k, job in enumerate(jobs):
            if note:
                note(f"job {k + 1}/{len(jobs)}: {_label(job)}")
            out.append(fn(job, *shared, note))
        return out


class RayExecutor:
    """Every job as a Ray task (one CPU each) on the cluster at ``address``, or on a local
    instance started here when it is None or "local" (``num_cpus`` caps it; default every
    core). See :func:`vlroute._ray.connect`.

    The workers import vlroute: on a cluster, install it (and the extras the routers need)
    on every node. The shared values (the seeds' matrices, the spec with its features and
    any token arrays, which are read whole) go to the object store once. A local instance
    started here is shut down when the map is done; a cluster is left running.

    Torch routers (mlp, mf, irt) train with one thread in a task of one CPU and with
    torch's default threads here: their float sums may then differ in the last bits, which
    can move a decision that sits on a tie.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus

    def map(self, fn: Callable[..., Any], jobs: Sequence[Any], *shared: Any,
            note: Note | None = None) -> list[Any]:
        ray = require("ray", extra="ray")
        started = connect(self.address, self.num_cpus)
        try:
            remote = ray.remote(num_cpus=1)(_call)
            refs = [ray.put(value) for value in shared]
            pending = {remote.remote(fn, job, *refs): k for k, job in enumerate(jobs)}
            out: list[Any] = [None] * len(jobs)
            left = list(pending)
            if note:                    # a step that starts the count; each job ends one
                note(f"job 0/{len(jobs)}: {len(jobs)} jobs sent to Ray")
            while left:
                done, left = ray.wait(left, num_returns=1)
                k = pending[done[0]]
                try:
                    out[k] = ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:
                    # the job's own error (a bad parameter, a missing extra on a node), not
                    # Ray's wrapper whose text is the whole remote traceback
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, Exception):
                        raise cause from None
                    raise
                if note:
                    note(f"job {len(jobs) - len(left)}/{len(jobs)} done: {_label(jobs[k])}")
            return out
        finally:
            if started:
                ray.shutdown()


def _call(fn: Callable[..., Any], job: Any, *shared: Any) -> Any:
    return fn(job, *shared, None)


def _label(job: Any) -> str:
    names = getattr(job, "names", ())
    seed = getattr(job, "seed", None)
    shown = ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
    return f"seed {seed}: {shown}" if seed is not None else shown


__all__ = ["Executor", "LocalExecutor", "RayExecutor"]
