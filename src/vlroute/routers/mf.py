"""Matrix factorisation router (after RouteLLM's MF): requests are projected into a small
space shared with learned model embeddings; P(model solves request) is the sigmoid of their
dot product plus a model bias."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from vlroute._typing import FloatArray
from vlroute.routers._params import Constraint, Interval
from vlroute.routers.mlp import MLPRouter


class MFRouter(MLPRouter):
    """Low-rank bilinear quality estimator: logit(x, k) = <v_k, P x> + b_k, trained with
    binary cross-entropy (graded scores as soft targets). Unlike one regression per model,
    the models share the projection P, so a model with few labels borrows strength from the
    others.

    Parameters
    ----------
    rank : int
        Dimension of the shared space (model embeddings v_k).
    learning_rate, weight_decay, max_epochs, batch_size, patience, random_state : Adam
        training with early stopping on a grouped hold-out of the train split.
    """

    activation = "identity"
    _parameter_constraints: ClassVar[dict[str, Constraint]] = {
        **MLPRouter._parameter_constraints, "rank": Interval(int, 1)}

    def __init__(self, *, rank: int = 32, learning_rate: float = 1e-3,
                 weight_decay: float = 1e-4, max_epochs: int = 300, batch_size: int = 256,
                 patience: int = 5, random_state: int = 0, candidates: str = "all") -> None:
        super().__init__(hidden_sizes=(rank,), learning_rate=learning_rate,
                         weight_decay=weight_decay, max_epochs=max_epochs,
                         batch_size=batch_size, patience=patience,
                         random_state=random_state, candidates=candidates)
        self.rank = rank

    def model_embeddings(self) -> FloatArray:
        """(n_models, rank) learned model embeddings v_k."""
        out: FloatArray = np.asarray(self.state_["W1"])
        return out
