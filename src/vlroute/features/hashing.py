"""A deterministic, dependency-free encoder for tests: hashed bag of words, hashed image bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from vlroute._typing import FloatArray
from vlroute.features.base import Encoder, Item, Modality


class HashingEncoder(Encoder):
    """Feature hashing of words (text) or of image bytes (image), L2-normalised.

    Parameters
    ----------
    n_features : int
        Vector length.
    modality : {"text", "image"}
        What to read.
    """

    def __init__(self, n_features: int = 64, modality: Modality = "text") -> None:
        self.n_features = n_features
        self.modality = modality

    @property
    def encoder_id(self) -> str:
        """``hashing-<modality>-<n>``."""
        return f"hashing-{self.modality}-{self.n_features}"

    @property
    def dim(self) -> int:
        """``n_features``."""
        return self.n_features

    def encode_batch(self, items: Sequence[Item]) -> FloatArray:
        """Hashed counts, L2-normalised."""
        out = np.zeros((len(items), self.n_features))
        for row, item in enumerate(items):
            tokens = (item.text.lower().split() if self.modality == "text"
                      else [p.read_bytes().hex()[:64] for p in item.images])
            for token in tokens:
                h = int.from_bytes(hashlib.md5(token.encode()).digest()[:4], "little")
                out[row, h % self.n_features] += 1.0 if h & 1 << 31 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        result: FloatArray = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
        return result
