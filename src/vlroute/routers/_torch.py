"""The training loop of the neural routers (torch), and their numpy forward pass.

Networks are plain stacks of linear layers; a fitted network is kept as numpy arrays
(``W0, b0, W1, b1, ...``), so routing, artifacts and the gateway need no torch. Training is
seeded, single-process, and stops early on the loss of a grouped hold-out of the train split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vlroute._optional import require
from vlroute._typing import FloatArray

Loss = Literal["bce", "soft_ce"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train a network (sklearn-style names)."""

    hidden_sizes: tuple[int, ...]
    activation: Literal["relu", "identity"] = "relu"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_epochs: int = 300
    batch_size: int = 1024
    patience: int = 3
    dropout: float = 0.0
    random_state: int = 0


def train_network(X: FloatArray, Y: FloatArray, mask: FloatArray, loss: Loss,
                  config: TrainConfig, holdout: np.ndarray) -> dict[str, np.ndarray]:
    """Fit a network from standardised ``X`` (n, d) to ``Y`` (n, m) and return its layers.

    ``bce``: per-output binary cross-entropy on targets in [0, 1], averaged where ``mask`` is 1
    (missing labels are 0 in the mask). ``soft_ce``: rows of ``Y`` are distributions over the
    outputs (mask unused). The epoch with the lowest hold-out loss is kept; with no hold-out
    rows, the last epoch of ``max_epochs``.
    """
    torch = require("torch", extra="encoders")
    nn = torch.nn
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.random_state)
        sizes = [X.shape[1], *config.hidden_sizes, Y.shape[1]]
        layers: list[Any] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                if config.activation == "relu":
                    layers.append(nn.ReLU())
                if config.dropout > 0:
                    layers.append(nn.Dropout(config.dropout))
        net = nn.Sequential(*layers)
        opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate,
                               weight_decay=config.weight_decay)
        fit_rows = np.flatnonzero(~holdout)
        val_rows = np.flatnonzero(holdout)
        tX, tY, tM = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                      for a in (X, Y, mask))
        gen = torch.Generator().manual_seed(config.random_state)

        def batch_loss(rows: Any) -> Any:
            logits = net(tX[rows])
            if loss == "soft_ce":
                return -(tY[rows] * torch.log_softmax(logits, dim=1)).sum(1).mean()
            per = nn.functional.binary_cross_entropy_with_logits(
                logits, tY[rows], reduction="none") * tM[rows]
            return per.sum() / tM[rows].sum().clamp(min=1.0)

        best, best_state, waited = np.inf, None, 0
        fit_index = torch.from_numpy(fit_rows)
        val_index = torch.from_numpy(val_rows)
        batch = max(1, min(config.batch_size, len(fit_rows)))
        for _ in range(config.max_epochs):
            net.train()
            for chunk in fit_index[torch.randperm(len(fit_index), generator=gen)].split(batch):
                opt.zero_grad()
                batch_loss(chunk).backward()
                opt.step()
            if len(val_rows) == 0:
                continue
            net.eval()
            with torch.no_grad():
                val = float(batch_loss(val_index))
            if val < best - 1e-4:
                best, waited = val, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                waited += 1
                if waited >= config.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    out: dict[str, np.ndarray] = {}
    for i, lin in enumerate(linears):
        out[f"W{i}"] = lin.weight.detach().numpy().copy()
        out[f"b{i}"] = lin.bias.detach().numpy().copy()
    return out


def forward(layers: dict[str, np.ndarray], X: FloatArray, activation: str = "relu"
            ) -> FloatArray:
    """The logits of a network kept by :func:`train_network` (numpy only)."""
    n_layers = sum(1 for k in layers if k.startswith("W"))
    h = X
    for i in range(n_layers):
        h = h @ layers[f"W{i}"].T + layers[f"b{i}"]
        if i < n_layers - 1 and activation == "relu":
            h = np.maximum(h, 0.0)
    return h
