"""Encoding on Ray: ``vlroute features DIR --ray [ADDRESS]`` (the ``[ray]`` extra).

:class:`RayEncoder` wraps a named encoder: the cache, the keys and the arrays stay with the
caller (:meth:`vlroute.features.base.Encoder.encode`), and the rows to encode go through a
Ray Data ``map_batches`` over a pool of actors, each of which loads the model once. Workers
read the images at the bench's paths (made absolute here): on a cluster the bench must sit
where every node sees it at the same path (shared storage). Vectors equal the local path's
up to the last bits of float32 (actors run one BLAS thread each; ``bench/scale.py``
measures it).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlroute._optional import require
from vlroute._ray import connect
from vlroute._typing import FloatArray
from vlroute.features.base import Encoder, ImageSource, Item
from vlroute.features.registry import make_encoder

#: separates the image paths of one item in a column of strings (no path holds a NUL)
_SEP = "\0"


class RayEncoder(Encoder):
    """The encoder ``name`` (a :func:`vlroute.features.registry.make_encoder` name), run by
    ``actors`` Ray actors (default: one per CPU of the cluster) on the cluster at
    ``address`` or on a local instance started for the call (``num_cpus`` caps it)."""

    def __init__(self, name: str, address: str | None = None, *, actors: int | None = None,
                 num_cpus: int | None = None) -> None:
        self.name = name
        self.address = address
        self.actors = actors
        self.num_cpus = num_cpus
        self._local = make_encoder(name)
        self.modality = self._local.modality
        self.batch_size = self._local.batch_size

    @property
    def encoder_id(self) -> str:
        return self._local.encoder_id

    @property
    def dim(self) -> int:
        return self._local.dim

    def encode_batch(self, items: Sequence[Item]) -> FloatArray:
        """One batch, here (what the actors run; :meth:`encode` sends its rows to Ray)."""
        return self._local.encode_batch(items)

    def encode_rows(self, items: Sequence[Item], rows: Sequence[int]
                    ) -> Iterator[tuple[list[int], FloatArray]]:
        if not rows:
            return
        ray = require("ray", extra="ray")
        started = connect(self.address, self.num_cpus)
        try:
            # no more actors than batches: each loads the model
            batches = -(-len(rows) // self.batch_size)
            actors = min(self.actors or max(1, int(ray.cluster_resources().get("CPU", 1))),
                         batches)
            _quiet_ray_data(ray)
            records = [{"row": int(r), "text": items[r].text,
                        "images": _SEP.join(str(_file(p).resolve()) for p in items[r].images)}
                       for r in rows]
            ds = ray.data.from_items(records).map_batches(
                _actor_class(self.name), batch_size=self.batch_size,
                batch_format="numpy", num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=actors))
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                yield [int(r) for r in batch["row"]], np.asarray(batch["vector"],
                                                                 dtype=np.float32)
        finally:
            if started:
                ray.shutdown()


def _file(image: ImageSource) -> Path:
    """A bench image's file: Ray's workers read images from files by path, so bytes held in
    memory (a gateway request's) cannot be sent to them."""
    if not isinstance(image, Path):
        raise TypeError(f"Ray encodes images from files; got {image!r}. Encode requests held "
                        "in memory without --ray.")
    return image


def _quiet_ray_data(ray: Any) -> None:
    """Library code never prints: no progress bars or execution logs from Ray Data, and
    none of its own deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def _actor_class(name: str) -> type:
    """The actor class of encoder ``name``: it loads the encoder once, then encodes one
    batch per call (the name is closed over: Ray pickles the class by value)."""

    class Encode:
        def __init__(self) -> None:
            self.encoder = make_encoder(name)

        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            items = [Item(str(text), tuple(Path(p) for p in str(images).split(_SEP) if p))
                     for text, images in zip(batch["text"], batch["images"], strict=True)]
            return {"row": batch["row"],
                    "vector": np.asarray(self.encoder.encode_batch(items), dtype=np.float32)}

    return Encode


__all__ = ["RayEncoder"]
