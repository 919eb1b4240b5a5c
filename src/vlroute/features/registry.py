"""Encoder names: ``minilm``, ``st:<name or path>``, ``efficientnet-lite0``, ``image-stats``,
``hf:<name or path>`` (CLIP / SigLIP / DINOv2), ``hashing-text``, ``hashing-image``."""

from __future__ import annotations

from vlroute.errors import UnknownComponentError
from vlroute.features.base import Encoder

NAMES = ("minilm", "st:<name>", "efficientnet-lite0", "image-stats", "hf:<name>",
         "hashing-text", "hashing-image")


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
    if name == "image-stats":
        from vlroute.features.image_stats import ImageStatsEncoder

        return ImageStatsEncoder()
    if name in ("hashing-text", "hashing-image"):
        from vlroute.features.hashing import HashingEncoder

        return HashingEncoder(modality="text" if name == "hashing-text" else "image")
    raise UnknownComponentError(f"Unknown encoder {name!r}. Available: {', '.join(NAMES)}.")
