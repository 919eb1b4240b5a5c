"""The encoder contract: ``encode_batch`` is the only method an encoder must implement.

Items are :class:`Item` values (question text and image files, or a request's image bytes as
:class:`MemoryImage`). ``encode`` batches, uses the cache keyed by (encoder id, content hash)
and reports progress; encoders never see files of a bench, only items, and open images with
:func:`open_image`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from vlroute._typing import FloatArray

Modality = Literal["text", "image"]
Progress = Callable[[int, int], None]


class MemoryImage:
    """An image's bytes in memory where an encoder reads image files: the gateway hands a
    request's images to its encoders this way, so they never reach the disk (no temporary
    files to write and remove per request, none left behind by a crash)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read_bytes(self) -> bytes:
        """The bytes, as :meth:`pathlib.Path.read_bytes` gives a file's."""
        return self.data

    def __repr__(self) -> str:
        return f"MemoryImage({len(self.data)} bytes)"


#: what an item's image is: a file, or bytes in memory
ImageSource = Path | MemoryImage


class ImageDecodeError(OSError):
    """An image that opens but does not decode (truncated, corrupt, a mode a reader cannot
    take). Pillow and the OCR engine raise many types for these (ValueError, RuntimeError,
    EOFError, OpenCV's errors); encoders raise this one, an OSError, so that the gateway
    answers the client's bad image with a 400, not a 500."""


@contextlib.contextmanager
def decoding(source: ImageSource) -> Iterator[None]:
    """Turn any failure while an image is decoded into :class:`ImageDecodeError`."""
    try:
        yield
    except (ImageDecodeError, MemoryError):
        raise
    except Exception as exc:
        name = source if isinstance(source, MemoryImage) else str(source)
        raise ImageDecodeError(f"image {name} does not decode ({type(exc).__name__}: "
                               f"{exc})") from exc


def open_image(source: ImageSource) -> Image.Image:
    """PIL's (lazy) image of a file or of in-memory bytes."""
    if isinstance(source, MemoryImage):
        return Image.open(io.BytesIO(source.data))
    return Image.open(source)


@dataclass(frozen=True)
class Item:
    """One request as encoders see it: the text and the images (files, or bytes in memory)."""

    text: str
    images: tuple[ImageSource, ...] = ()

    def content_hash(self, modality: Modality) -> str:
        """SHA-256 of what an encoder of ``modality`` reads (text, or the image bytes)."""
        digest = hashlib.sha256()
        if modality == "text":
            digest.update(self.text.encode("utf-8"))
        else:
            for path in self.images:
                digest.update(path.read_bytes())
                digest.update(b"\0")
        return digest.hexdigest()


class Encoder(ABC):
    """Turn items into fixed-size vectors of one modality.

    Subclasses set ``modality`` and implement ``encoder_id``, ``dim`` and ``encode_batch``.
    An item without an image gets a zero vector from an image encoder.
    """

    modality: Modality = "text"
    batch_size: int = 32

    @property
    @abstractmethod
    def encoder_id(self) -> str:
        """Stable id (name plus weights revision); keys the cache and feature specs."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of each vector."""

    @abstractmethod
    def encode_batch(self, items: Sequence[Item]) -> FloatArray:
        """(len(items), dim) vectors."""

    def encode(self, items: Sequence[Item], *, cache: FeatureCache | None = None,
               progress: Progress | None = None) -> FloatArray:
        """Vectors of every item, batched, reusing and filling ``cache``."""
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        keys = [item.content_hash(self.modality) if self._has_input(item) else ""
                for item in items]
        todo = []
        for i, key in enumerate(keys):
            hit = cache.get(self.encoder_id, key) if (cache and key) else None
            if hit is not None:
                out[i] = hit
            elif key:
                todo.append(i)
        done = 0
        for rows, vectors in self.encode_rows(items, todo):
            out[rows] = vectors
            if cache is not None:
                cache.put_many(self.encoder_id, [keys[i] for i in rows], vectors)
            done += len(rows)
            if progress:
                progress(done, len(todo))
        if cache is not None:
            cache.flush()
        return out.astype(np.float64)

    def encode_rows(self, items: Sequence[Item], rows: Sequence[int]
                    ) -> Iterator[tuple[list[int], FloatArray]]:
        """``(rows, vectors)`` for batches of ``batch_size`` of the given rows of ``items``,
        in any order (here: in order; a distributed encoder yields them as they finish)."""
        for start in range(0, len(rows), self.batch_size):
            part = list(rows[start:start + self.batch_size])
            yield part, np.asarray(self.encode_batch([items[i] for i in part]),
                                   dtype=np.float32)

    def _has_input(self, item: Item) -> bool:
        return bool(item.images) if self.modality == "image" else True


class FeatureCache:
    """Vectors on disk keyed by (encoder id, content hash): one ``.npz`` per encoder.

    Writes are atomic (temp file, then rename); a corrupt or foreign file is ignored.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._data: dict[str, dict[str, np.ndarray]] = {}
        self._dirty: set[str] = set()

    def _file(self, encoder_id: str) -> Path:
        slug = hashlib.sha256(encoder_id.encode()).hexdigest()[:16]
        return self.root / f"{slug}.npz"

    def _load(self, encoder_id: str) -> dict[str, np.ndarray]:
        if encoder_id not in self._data:
            table: dict[str, np.ndarray] = {}
            path = self._file(encoder_id)
            if path.is_file():
                try:
                    with np.load(path, allow_pickle=False) as npz:
                        if str(npz["encoder_id"]) == encoder_id:
                            table = dict(zip(npz["keys"].tolist(), npz["vectors"], strict=True))
                except (OSError, ValueError, KeyError):
                    table = {}
            self._data[encoder_id] = table
        return self._data[encoder_id]

    def get(self, encoder_id: str, key: str) -> np.ndarray | None:
        """The cached vector, or None."""
        return self._load(encoder_id).get(key)

    def put_many(self, encoder_id: str, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Remember vectors (written on :meth:`flush`)."""
        table = self._load(encoder_id)
        for key, vector in zip(keys, vectors, strict=True):
            table[key] = vector
        self._dirty.add(encoder_id)

    def flush(self) -> None:
        """Write every changed encoder file atomically."""
        from vlroute._io import atomic_path

        for encoder_id in sorted(self._dirty):
            table = self._data[encoder_id]
            path = self._file(encoder_id)
            with atomic_path(path) as tmp:
                with tmp.open("wb") as handle:
                    np.savez(handle, encoder_id=np.array(encoder_id),
                             keys=np.array(list(table), dtype=str),
                             vectors=np.stack(list(table.values())).astype(np.float32))
        self._dirty.clear()
