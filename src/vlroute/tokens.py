"""Token-level request inputs of the end-to-end routers: text token states and image tokens,
each with a mask, row-aligned with the requests.

A :class:`Tokens` value is what the features layer computes (``vlroute features --tokens``,
or the gateway for one request) and what the end-to-end routers take in place of a feature
matrix. It depends on numpy only, so both layers may use it. Arrays may be memory-mapped
float16 files: indexing (``tokens[rows]``) only records the rows, and :meth:`Tokens.batch`
reads those rows as float32 when a router needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: which text tower layer the text tokens come from
TEXT_STATES = ("last", "penultimate")


@dataclass(frozen=True)
class TokenBatch:
    """Materialised float32 tokens of some rows."""

    text: np.ndarray          # (n, Lt, Dt)
    text_mask: np.ndarray     # (n, Lt) bool, True where a token is real
    image: np.ndarray         # (n, Li, Di)
    image_mask: np.ndarray    # (n, Li) bool


class Tokens:
    """Text token states (n, Lt, Dt) and image tokens (n, Li, Di) with their masks.

    ``rows`` selects rows of the stored arrays lazily (None: all of them). ``text_states``
    says which of the text tower's layers the text tokens are: ``"last"`` (its output) or
    ``"penultimate"`` (the input of its last layer, for routers that fine-tune that layer);
    ``text_tower`` names the tower (``minilm``, ``st:<name>``; None when unknown).
    """

    def __init__(self, text: np.ndarray, text_mask: np.ndarray, image: np.ndarray,
                 image_mask: np.ndarray, rows: np.ndarray | None = None, *,
                 text_states: str = "last", text_tower: str | None = None) -> None:
        if text_states not in TEXT_STATES:
            raise ValueError(f"tokens: text_states must be one of {', '.join(TEXT_STATES)}, "
                             f"got {text_states!r}.")
        n = len(text)
        for name, arr, ndim in (("text", text, 3), ("text_mask", text_mask, 2),
                                ("image", image, 3), ("image_mask", image_mask, 2)):
            if arr.ndim != ndim or len(arr) != n:
                raise ValueError(f"tokens: {name} has shape {arr.shape}; expected {ndim} "
                                 f"dimensions and {n} rows (as text).")
        if text_mask.shape[1] != text.shape[1] or image_mask.shape[1] != image.shape[1]:
            raise ValueError(f"tokens: masks {text_mask.shape}, {image_mask.shape} do not match "
                             f"the tokens {text.shape}, {image.shape}.")
        self.text, self.text_mask, self.image, self.image_mask = text, text_mask, image, \
            image_mask
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.text_states, self.text_tower = text_states, text_tower

    def __len__(self) -> int:
        return len(self.text) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        """(n, Lt, Dt, Li, Di): rows, text length and width, image tokens and width."""
        return (len(self), *self.text.shape[1:], *self.image.shape[1:])

    @property
    def ndim(self) -> int:
        """Tokens are not a matrix: routers on feature matrices refuse them by this."""
        return 5

    @property
    def dims(self) -> dict[str, int]:
        """Token counts and widths, for checks against a fitted router."""
        return {"text_len": int(self.text.shape[1]), "text_dim": int(self.text.shape[2]),
                "image_len": int(self.image.shape[1]), "image_dim": int(self.image.shape[2])}

    def _index(self) -> np.ndarray:
        return np.arange(len(self.text)) if self.rows is None else self.rows

    def __getitem__(self, key: Any) -> Tokens:
        index = np.asarray(key) if not isinstance(key, slice) else None
        if index is not None and index.dtype == bool:
            if len(index) != len(self):
                raise IndexError(f"a mask of {len(index)} rows for {len(self)} tokens rows.")
            index = np.flatnonzero(index)
        chosen = self._index()[key] if index is None else self._index()[index.astype(np.int64)]
        return Tokens(self.text, self.text_mask, self.image, self.image_mask,
                      np.atleast_1d(chosen), text_states=self.text_states,
                      text_tower=self.text_tower)

    def batch(self, rows: np.ndarray | None = None) -> TokenBatch:
        """float32 tokens of ``rows`` (positions in this value; None: all)."""
        index = self._index() if rows is None else self._index()[np.asarray(rows, np.int64)]
        order = np.argsort(index, kind="stable")          # memory maps read forwards
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        take = index[order]

        def read(arr: np.ndarray, dtype: Any) -> np.ndarray:
            out = np.asarray(arr[take], dtype=dtype)
            return out[back]

        return TokenBatch(read(self.text, np.float32), read(self.text_mask, bool),
                          read(self.image, np.float32), read(self.image_mask, bool))


__all__ = ["TEXT_STATES", "TokenBatch", "Tokens"]
