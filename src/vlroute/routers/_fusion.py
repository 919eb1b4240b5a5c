"""The fusion transformer of the end-to-end routers and its training loop (torch).

Text token states and image tokens are projected to ``d_model``, given learned positions and
a type, and read by a small pre-norm transformer encoder together with a CLS token (and, for
the ECVL router, a scenario token: the MES and the cost dimension embedded). The CLS output,
layer-normalised, is the request embedding the heads read. Fitted weights are kept as named
numpy arrays (the state dict), so artifacts hold no pickle.

Training follows VL-RouterBench's end-to-end routers: AdamW (weight decay 0.01), a linear
warm-up over the first 10% of steps then linear decay, gradient clipping at 1.0, batch 16, at
most 5 epochs, early stopping on a score of a grouped hold-out of the train split (patience
2), the best epoch's weights restored. Everything is seeded and runs on ``n_threads`` torch
threads (1 by default), so a fit is deterministic.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlroute._optional import require
from vlroute.tokens import Tokens

#: the cost dimensions a scenario token can carry, in embedding order
COST_DIMS = ("usd", "latency", "energy")


@dataclass(frozen=True)
class FusionConfig:
    """Network shape and training schedule."""

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    clip: float = 1.0
    batch_size: int = 16
    max_epochs: int = 5
    patience: int = 2
    random_state: int = 0
    n_threads: int = 1


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[Any]:
    """torch with ``n`` intra-op threads for the block (restored after)."""
    torch = require("torch", extra="encoders")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield torch
    finally:
        torch.set_num_threads(before)


def build_net(dims: dict[str, int], n_models: int, config: FusionConfig, *,
              head: str = "linear", scenario: bool = False,
              text_layer: dict[str, Any] | None = None) -> Any:
    """A fresh :class:`FusionNet` (built here so that torch is imported only when used).
    ``text_layer`` (``dim``, ``heads``, ``ffn``, ``eps``): a BERT layer applied to the text
    tokens first, for penultimate states and the tower's last layer's weights (loaded by
    the caller) to be fine-tuned."""
    torch = require("torch", extra="encoders")
    nn = torch.nn

    class FusionNet(nn.Module):  # type: ignore[misc,name-defined]
        """Projected text + image tokens, CLS (+ scenario) token, transformer, heads."""

        def __init__(self) -> None:
            super().__init__()
            d = config.d_model
            self.text_layer = None if text_layer is None else bert_layer(text_layer)
            self.text_proj = nn.Linear(dims["text_dim"], d)
            self.image_proj = nn.Linear(dims["image_dim"], d)
            self.text_pos = nn.Parameter(torch.randn(dims["text_len"], d) * 0.02)
            self.image_pos = nn.Parameter(torch.randn(dims["image_len"], d) * 0.02)
            self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.in_norm = nn.LayerNorm(d)
            if scenario:
                self.mes_proj = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
                self.by_embed = nn.Embedding(len(COST_DIMS), d)
                self.scen_out = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, d))
            layer = nn.TransformerEncoderLayer(d, config.n_heads, 2 * d, config.dropout,
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, config.n_layers,
                                                 enable_nested_tensor=False)
            self.out_norm = nn.LayerNorm(d)
            self.drop = nn.Dropout(config.dropout)
            if head == "cosine":
                self.model_embed = nn.Parameter(torch.randn(n_models, d) * 0.02)
                self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
            else:
                self.policy = nn.Linear(d, n_models)
            self.quality = nn.Linear(d, n_models)

        def embed(self, text: Any, text_mask: Any, image: Any, image_mask: Any,
                  mes: Any = None, by: Any = None) -> Any:
            n = text.shape[0]
            parts = [self.cls.expand(n, 1, -1)]
            keep = [torch.ones(n, 1, dtype=torch.bool)]
            if scenario:
                scen = self.mes_proj(mes) + self.by_embed(by)
                parts.append(scen[:, None, :])
                keep.append(torch.ones(n, 1, dtype=torch.bool))
            if self.text_layer is not None:
                text = self.text_layer(text, text_mask)
            parts += [self.text_proj(text) + self.text_pos[:text.shape[1]],
                      self.image_proj(image) + self.image_pos[:image.shape[1]]]
            keep += [text_mask, image_mask]
            h = self.in_norm(torch.cat(parts, dim=1))
            out = self.encoder(h, src_key_padding_mask=~torch.cat(keep, dim=1))[:, 0]
            if scenario:      # the scenario also reaches the heads directly (a residual)
                out = out + self.scen_out(torch.cat([out, scen], dim=1))
            return self.out_norm(out)

        def policy_logits(self, z: Any) -> Any:
            if head == "cosine":
                q = nn.functional.normalize(z, dim=-1)
                k = nn.functional.normalize(self.model_embed, dim=-1)
                return self.logit_scale.exp() * q @ k.T
            return self.policy(self.drop(z))

        def quality_logits(self, z: Any) -> Any:
            return self.quality(self.drop(z))

    return FusionNet()


def bert_layer(shape: dict[str, Any]) -> Any:
    """A post-norm BERT encoder layer (self-attention, then a GELU feed-forward, each with a
    residual and LayerNorm) of ``shape`` (``dim``, ``heads``, ``ffn``, ``eps``), written out so
    that it does not depend on a transformers version; ``layer(states, mask)`` with ``mask``
    True on real tokens. Dropout on attention and outputs as the tower's config gives it
    (``dropout``, ``attention_dropout``; 0.1 when absent)."""
    torch = require("torch", extra="encoders")
    nn = torch.nn
    d, heads, ffn, eps = int(shape["dim"]), int(shape["heads"]), int(shape["ffn"]), \
        float(shape["eps"])
    if min(d, heads, ffn) < 1 or d % heads:
        raise ValueError(f"text layer: dim {d}, heads {heads} and ffn {ffn} must be >= 1, "
                         "with dim a multiple of heads.")
    p_hidden = float(shape.get("dropout", 0.1))
    p_attention = float(shape.get("attention_dropout", 0.1))

    class BertLayer(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), \
                nn.Linear(d, d)
            self.attn_out, self.attn_norm = nn.Linear(d, d), nn.LayerNorm(d, eps=eps)
            self.inter, self.out = nn.Linear(d, ffn), nn.Linear(ffn, d)
            self.out_norm = nn.LayerNorm(d, eps=eps)
            self.drop, self.attn_drop = nn.Dropout(p_hidden), nn.Dropout(p_attention)

        def forward(self, x: Any, mask: Any) -> Any:
            n, length, _ = x.shape

            def split(t: Any) -> Any:
                return t.view(n, length, heads, d // heads).transpose(1, 2)

            scores = split(self.query(x)) @ split(self.key(x)).transpose(-1, -2)
            scores = scores / math.sqrt(d // heads)
            # a large finite penalty, not -inf: a row without real tokens stays finite
            scores = scores.masked_fill(~mask[:, None, None, :], -1e4)
            context = self.attn_drop(scores.softmax(-1)) @ split(self.value(x))
            context = context.transpose(1, 2).reshape(n, length, d)
            h = self.attn_norm(x + self.drop(self.attn_out(context)))
            return self.out_norm(h + self.drop(self.out(
                nn.functional.gelu(self.inter(h)))))

    return BertLayer()


def to_tensors(torch: Any, tokens: Tokens, rows: np.ndarray | None = None) -> tuple[Any, ...]:
    """(text, text_mask, image, image_mask) tensors of ``rows`` of ``tokens``, cut after the
    last position that is real in any row: padding is masked out of attention and only the
    first (CLS) output is read, so the cut changes nothing but the work (most questions fill
    a fraction of the 128 text tokens; a text-only set has no real image token)."""
    b = tokens.batch(rows)
    text_len, image_len = _used(b.text_mask), _used(b.image_mask)
    return (torch.from_numpy(np.ascontiguousarray(b.text[:, :text_len])),
            torch.from_numpy(np.ascontiguousarray(b.text_mask[:, :text_len])),
            torch.from_numpy(np.ascontiguousarray(b.image[:, :image_len])),
            torch.from_numpy(np.ascontiguousarray(b.image_mask[:, :image_len])))


def _used(mask: np.ndarray) -> int:
    """One past the last column of ``mask`` that is True in some row (0 if none is)."""
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[-1]) + 1 if len(cols) else 0


def export_state(net: Any) -> dict[str, np.ndarray]:
    """The net's weights as named float32 arrays."""
    return {k: v.detach().cpu().numpy().astype(np.float32).copy()
            for k, v in net.state_dict().items()}


def import_state(net: Any, state: dict[str, np.ndarray]) -> Any:
    """Load named arrays into ``net`` (strict: every weight, no other) and set eval mode."""
    torch = require("torch", extra="encoders")
    net.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float32))
                         for k, v in state.items()}, strict=True)
    return net.eval()


#: loss(net, tensors of a batch, the batch's train rows) -> scalar tensor
LossFn = Callable[[Any, tuple[Any, ...], np.ndarray], Any]
#: score(net) -> hold-out score (higher is better)
ScoreFn = Callable[[Any], float]


def train_fusion(  # noqa: PLR0913 - the loop and its hooks
        net: Any, tokens: Tokens, fit_rows: np.ndarray, loss_fn: LossFn,
                 score_fn: ScoreFn | None, config: FusionConfig, *,
                 val_rows: np.ndarray | None = None, epochs: int | None = None,
                 params: Any = None) -> dict[str, Any]:
    """Train ``net`` on ``fit_rows`` of ``tokens``; keep the epoch with the best ``score_fn``
    (the hold-out Rank Score), ties going to the lower loss on ``val_rows`` (so that a score
    that has not moved yet does not pin the untrained epoch); None, or no hold-out: the last
    epoch. ``params``: the parameters to train (default all). Returns a small history
    (epochs run, best epoch, scores)."""
    torch = require("torch", extra="encoders")
    epochs = epochs or config.max_epochs
    params = list(params if params is not None else net.parameters())
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    batch = max(1, min(config.batch_size, len(fit_rows)))
    steps = epochs * math.ceil(len(fit_rows) / batch)
    warm = max(1, round(config.warmup * steps))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (steps - step) / max(1, steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = np.random.default_rng(config.random_state)
    best: tuple[float, float] = (-np.inf, -np.inf)
    best_state, waited, best_epoch, scores = None, 0, -1, []
    val = np.asarray(val_rows if val_rows is not None else [], dtype=np.int64)
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(fit_rows)
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            opt.zero_grad()
            loss = loss_fn(net, to_tensors(torch, tokens, rows), rows)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.clip)
            opt.step()
            sched.step()
        if score_fn is None:
            continue
        net.eval()
        with torch.no_grad():
            value = (round(float(score_fn(net)), 9), -_mean_loss(torch, net, tokens, val,
                                                                 loss_fn, batch))
        scores.append(value[0])
        if value > best:
            best, best_epoch, waited = value, epoch, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if waited >= config.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return {"epochs": len(scores) if score_fn is not None else epochs,
            "best_epoch": best_epoch, "scores": scores}


def _mean_loss(torch: Any, net: Any, tokens: Tokens, rows: np.ndarray, loss_fn: LossFn,
               batch: int) -> float:
    """Row-weighted mean of ``loss_fn`` over ``rows`` (0 without rows)."""
    total = 0.0
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        total += float(loss_fn(net, to_tensors(torch, tokens, chunk), chunk)) * len(chunk)
    return total / max(len(rows), 1)


def predict_in_batches(net: Any, tokens: Tokens, fn: Callable[[Any, tuple[Any, ...],
                                                              np.ndarray], Any],
                       batch: int = 64) -> np.ndarray:
    """``fn(net, tensors, rows)`` over ``tokens`` in batches, stacked (eval mode, no grad)."""
    torch = require("torch", extra="encoders")
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(tokens), batch):
            rows = np.arange(start, min(start + batch, len(tokens)))
            out.append(np.asarray(fn(net, to_tensors(torch, tokens, rows), rows).numpy(),
                                  dtype=np.float64))
    return np.concatenate(out) if out else np.zeros((0, 0))
