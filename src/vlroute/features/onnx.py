"""MiniLM and EfficientNet-Lite0 on onnxruntime: the same features as the torch encoders
(to 1e-4) from the ``*.onnx`` files ``vlroute export onnx`` writes, without torch.

The tokenizer stays outside the graph (the ``tokenizers`` package reads the bundled
``tokenizer.json``); the text graph is the transformer plus mean pooling over the attention
mask and L2 normalisation, as sentence-transformers computes them. The image graph is the
network's pooled features; the pixels come from :func:`vlroute.features.image.lite_pixels`,
the function the torch encoder reads, so both see the same input bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlroute._optional import require
from vlroute._typing import FloatArray
from vlroute.features.base import Encoder, Item
from vlroute.features.image import _mean_per_item, lite_pixels

#: what the edge runtime needs (``pip install 'vlroute[edge]'``)
EXTRA = "edge"


def onnx_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session for ``path`` with ``threads`` intra-op threads, one
    inter-op thread and every graph optimisation."""
    ort = require("onnxruntime", extra=EXTRA)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # a gateway shares its cores with the event loop: idle pool threads must not spin
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _Exported(Encoder):
    """What both exported encoders share: the torch encoder's id and width they reproduce,
    onnxruntime's threads and the batch size."""

    def __init__(self, model: Path, *, encoder_id: str, dim: int, threads: int,
                 batch_size: int) -> None:
        self.model = model
        self._encoder_id = encoder_id
        self._dim = dim
        self.threads = threads
        self.batch_size = batch_size

    @property
    def encoder_id(self) -> str:
        """The torch encoder's id."""
        return self._encoder_id

    @property
    def dim(self) -> int:
        """Feature width."""
        return self._dim


class OnnxTextEncoder(_Exported):
    """Sentence embeddings (L2-normalised) from an exported text graph and its tokenizer.

    Parameters
    ----------
    model : Path
        The graph (inputs ``input_ids``, ``attention_mask``; output ``embedding``).
    tokenizer : Path
        A ``tokenizers`` JSON file.
    encoder_id : str
        The id of the torch encoder it was exported from (its features are the same).
    dim : int
        Embedding width.
    max_length : int
        Tokens kept per text (sentence-transformers' ``max_seq_length``).
    threads : int
        onnxruntime intra-op threads.
    one_at_a_time : bool
        Run the graph on one text at a time. A dynamically quantised graph needs it: it
        quantises activations with ranges taken over the whole batch, padding included, so
        in a batch a text's features would depend on the texts beside it (on DynaMath by up
        to 0.025, as much as int8 moves them from fp32) and a gateway's decision on its
        neighbours.
    """

    modality = "text"

    def __init__(self, model: Path, tokenizer: Path, *, encoder_id: str,
                 dim: int, max_length: int = 256, threads: int = 1,
                 batch_size: int = 64, one_at_a_time: bool = False) -> None:
        super().__init__(model, encoder_id=encoder_id, dim=dim, threads=threads,
                         batch_size=batch_size)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.one_at_a_time = one_at_a_time
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            tokenizers = require("tokenizers", extra=EXTRA)
            tok = tokenizers.Tokenizer.from_file(str(self.tokenizer))
            tok.enable_truncation(self.max_length)
            tok.enable_padding()          # to the longest text of the batch
            self._loaded = (tok, onnx_session(self.model, self.threads))
        return self._loaded

    def encode_batch(self, items: Sequence[Item]) -> FloatArray:
        """Normalised embeddings of the items' texts."""
        if not items:
            return np.zeros((0, self.dim))
        tok, session = self._load()
        texts = [item.text for item in items]
        batches = [[t] for t in texts] if self.one_at_a_time else [texts]
        out = []
        for batch in batches:
            encoded = tok.encode_batch(batch)
            ids = np.array([e.ids for e in encoded], dtype=np.int64)        # (n, seq)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            (vectors,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
            out.append(np.asarray(vectors, dtype=np.float64))              # (n, dim)
        return np.vstack(out)


class OnnxImageEncoder(_Exported):
    """EfficientNet-Lite0 pooled features (1280-d) from an exported image graph; several
    images per item are averaged and an item without images gets a zero row, as the torch
    encoder does.

    Parameters
    ----------
    model : Path
        The graph (input ``pixels`` (n, 3, 224, 224) in [-1, 1]; output ``features``).
    encoder_id : str
        The id of the torch encoder it was exported from.
    dim : int
        Feature width.
    threads : int
        onnxruntime intra-op threads.
    """

    modality = "image"

    def __init__(self, model: Path, *, encoder_id: str, dim: int = 1280, threads: int = 1,
                 batch_size: int = 16) -> None:
        super().__init__(model, encoder_id=encoder_id, dim=dim, threads=threads,
                         batch_size=batch_size)
        self._session: Any = None

    def _load(self) -> Any:
        if self._session is None:
            self._session = onnx_session(self.model, self.threads)
        return self._session

    def encode_batch(self, items: Sequence[Item]) -> FloatArray:
        """Pooled features of each item's images."""
        if not any(item.images for item in items):     # a text-only request
            return np.zeros((len(items), self.dim))
        session = self._load()
        pixels = lite_pixels(items, channels_first=True)                      # NCHW
        (pooled,) = session.run(None, {"pixels": pixels})                     # (n_images, dim)
        return _mean_per_item(items, np.asarray(pooled, dtype=np.float64))


def exported_encoder(artifact: Path, kind: str, entry: dict[str, Any], variant: str,
                     threads: int = 1) -> Encoder:
    """The encoder of an ``onnx.json`` entry (``vlroute export onnx``) for ``variant``. The
    int8 text graph is quantised dynamically, so it runs one text at a time."""
    file = artifact / entry["files"][variant]
    if kind == "text":
        return OnnxTextEncoder(file, artifact / entry["tokenizer"],
                               encoder_id=entry["encoder_id"], dim=int(entry["dim"]),
                               max_length=int(entry["max_length"]), threads=threads,
                               one_at_a_time=variant == "int8")
    return OnnxImageEncoder(file, encoder_id=entry["encoder_id"], dim=int(entry["dim"]),
                            threads=threads)
