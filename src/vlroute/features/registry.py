"""Encoder names: ``minilm``, ``st:<name or path>``, ``efficientnet-lite0``, ``image-stats``,
``hf:<name or path>`` (CLIP / SigLIP / DINOv2), ``ocr`` (text read from the image, embedded
by MiniLM; ``ocr:<text encoder name>`` for another), ``hashing-text``, ``hashing-image``."""

from __future__ import annotations

from vlroute.errors import UnknownComponentError
from vlroute.features.base import Encoder

NAMES = ("minilm", "st:<name>", "efficientnet-lite0", "image-stats", "hf:<name>", "ocr",
         "ocr:<text encoder>", "hashing-text", "hashing-image")


def make_encoder(name: str) -> Encoder:
    """An encoder for a name (see the module docstring)."""
    if name == "minilm" or name.startswith("st:"):
        from vlroute.features.text import SentenceTransformerEncoder

        return SentenceTransformerEncoder(name.removeprefix("st:"))
    if name == "efficientnet-lite0":
        from vlroute.features.image import EfficientNetLite0Encoder

        return EfficientNetLite0Encoder()
    if name.startswith("hf:"):
        from vlroute.features.image import HFImageEncoder

        return HFImageEncoder(name.removeprefix("hf:"))
    if name == "ocr" or name.startswith("ocr:"):
        from vlroute.features.ocr import OCREncoder

        inner = make_encoder(name.removeprefix("ocr").removeprefix(":") or "minilm")
        if inner.modality != "text":
            raise UnknownComponentError(f"{name!r}: OCR text needs a text encoder, got "
                                        f"{inner.encoder_id} ({inner.modality}).")
        return OCREncoder(inner)
    if name == "image-stats":
        from vlroute.features.image_stats import ImageStatsEncoder

        return ImageStatsEncoder()
    if name in ("hashing-text", "hashing-image"):
        from vlroute.features.hashing import HashingEncoder

        return HashingEncoder(modality="text" if name == "hashing-text" else "image")
    raise UnknownComponentError(f"Unknown encoder {name!r}. Available: {', '.join(NAMES)}.")
