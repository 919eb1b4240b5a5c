"""Text read from the image (OCR), embedded with a text encoder: an optional offline feature.

RapidOCR (``rapidocr-onnxruntime``, its detection and recognition models ship inside the
package) reads each image; the lines are joined and embedded by a text encoder (MiniLM by
default), so labels, axis names and numbers printed in a figure reach the router. About
0.5-1 s per image on 2 CPU cores: compute it once with ``vlroute features --extra ocr`` (the
cache keys it by image content).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlroute._optional import require
from vlroute._typing import FloatArray
from vlroute.features.base import Encoder, ImageSource, Item, MemoryImage, decoding


@functools.cache
def _engine() -> Any:
    module = require("rapidocr_onnxruntime", extra="ocr")
    return module.RapidOCR()


def read_text(path: ImageSource) -> str:
    """The text lines RapidOCR finds in the image at ``path`` (a file or bytes in memory), top
    to bottom, one per line."""
    engine = _engine()
    with decoding(path):
        result, _ = engine(path.data if isinstance(path, MemoryImage) else str(path))
    return "\n".join(str(line[1]) for line in (result or []))


class OCREncoder(Encoder):
    """OCR text of an item's images, embedded by ``text_encoder``.

    Parameters
    ----------
    text_encoder : Encoder
        A text encoder (its id becomes part of this encoder's id).
    """

    modality = "image"

    def __init__(self, text_encoder: Encoder) -> None:
        self.text_encoder = text_encoder

    @property
    def encoder_id(self) -> str:
        """``ocr-rapidocr+<text encoder id>``."""
        return f"ocr-rapidocr+{self.text_encoder.encoder_id}"

    @property
    def dim(self) -> int:
        """The text encoder's width."""
        return self.text_encoder.dim

    def encode_batch(self, items: Sequence[Item]) -> FloatArray:
        """Read every image, then embed the texts in one batch (no text: a zero vector)."""
        texts = ["\n".join(read_text(p) for p in item.images) for item in items]
        out = np.zeros((len(items), self.dim))
        rows = [i for i, t in enumerate(texts) if t.strip()]
        if rows:
            out[rows] = self.text_encoder.encode_batch([Item(text=texts[i]) for i in rows])
        return out
