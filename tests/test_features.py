from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import make_set
from PIL import Image

from vlroute.data import READERS, build_bench
from vlroute.errors import BenchError, UnknownComponentError
from vlroute.features.base import FeatureCache, Item, MemoryImage
from vlroute.features.fusion import Fusion
from vlroute.features.hashing import HashingEncoder
from vlroute.features.image_stats import NAMES, ImageStatsEncoder
from vlroute.features.registry import make_encoder
from vlroute.features.store import compute_features, feature_matrix


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for k, colour in enumerate([(255, 255, 255), (10, 10, 200), (200, 30, 30)]):
        img = Image.new("RGB", (120 + 40 * k, 80), colour)
        for x in range(10, 100, 7):
            for y in range(20, 30):
                img.putpixel((x, y), (0, 0, 0))
        paths.append(tmp_path / f"img{k}.png")
        img.save(paths[-1])
    return paths


class CountingEncoder(HashingEncoder):
    def __init__(self) -> None:
        super().__init__(n_features=8)
        self.calls = 0

    def encode_batch(self, items):  # type: ignore[no-untyped-def]
        self.calls += len(items)
        return super().encode_batch(items)


def test_hashing_encoder_is_deterministic_and_the_cache_is_used(tmp_path: Path) -> None:
    items = [Item("a red square"), Item("a blue circle"), Item("a red square")]
    encoder = CountingEncoder()
    cache = FeatureCache(tmp_path / "cache")
    first = encoder.encode(items, cache=cache)
    assert first.shape == (3, 8) and np.allclose(first[0], first[2])
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0)
    again = CountingEncoder().encode(items, cache=FeatureCache(tmp_path / "cache"))
    assert np.allclose(first, again)
    fresh = CountingEncoder()
    fresh.encode(items, cache=FeatureCache(tmp_path / "cache"))
    assert fresh.calls == 0 and encoder.calls == 3


def test_a_corrupt_cache_file_is_ignored(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    HashingEncoder(8).encode([Item("x")], cache=cache)
    (next(tmp_path.glob("*.npz"))).write_bytes(b"garbage")
    assert FeatureCache(tmp_path).get("hashing-text-8", "k") is None


def test_image_encoders_give_zero_vectors_without_images(images: list[Path]) -> None:
    stats = ImageStatsEncoder().encode([Item("q", (images[0],)), Item("no image")])
    assert stats.shape == (2, len(NAMES)) and np.isfinite(stats).all()
    assert stats[0, 3] == 1 and not stats[1].any()
    assert stats[0, NAMES.index("white_share")] > 0.5


def test_fusion_modes() -> None:
    text, image = np.ones((2, 3)) * 2, np.ones((2, 4))
    assert Fusion("concat")(text, image).shape == (2, 7)
    fused = Fusion("normalize_concat")(text, image)
    assert np.allclose(np.linalg.norm(fused[:, :3], axis=1), 1.0)
    weighted = Fusion("weighted", text_weight=0.8)(text, image)
    assert np.allclose(np.linalg.norm(weighted[:, :3], axis=1), 0.8)
    assert Fusion("text")(text, image).shape == (2, 3)
    with pytest.raises(ValueError, match="Unknown fusion"):
        Fusion("sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs image"):
        Fusion("image")(text, None)


def test_offline_minilm_and_efficientnet(images: list[Path]) -> None:
    text = make_encoder("minilm")
    vectors = text.encode([Item("What is the area of the triangle?"),
                           Item("Compute the triangle's area."), Item("Which bike is red?")])
    assert vectors.shape == (3, 384) and text.encoder_id.startswith("st:all-MiniLM-L6-v2")
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    image = make_encoder("efficientnet-lite0")
    feats = image.encode([Item("q", (images[0],)), Item("q", (images[1], images[2]))])
    assert feats.shape == (2, 1280) and np.isfinite(feats).all() and feats.any(axis=1).all()
    # text-only requests (the gateway sees many): zero rows, alone or beside images
    mixed = image.encode_batch([Item("no image"), Item("q", (images[0],))])
    assert not mixed[0].any() and np.allclose(mixed[1], feats[0], atol=1e-5)
    assert not image.encode_batch([Item("text only")]).any()
    # five images run in forward chunks: each item's row is what it gets alone
    chunked = image.encode_batch([Item("q", (images[0],)), Item("q", (images[1], images[2])),
                                  Item("none"), Item("q", (images[2], images[0]))])
    assert np.allclose(chunked[:2], feats, atol=1e-5) and not chunked[2].any()
    assert np.allclose(chunked[3], image.encode_batch([Item("q", (images[2], images[0]))])[0],
                       atol=1e-5)


def test_images_held_in_memory_encode_as_their_files_do(images: list[Path]) -> None:
    """The gateway hands request images to the encoders as bytes (nothing reaches the disk):
    every image encoder it can serve with gives the same features, the same content hash."""
    names = ["efficientnet-lite0", "image-stats", "hashing-image"]
    if importlib.util.find_spec("rapidocr_onnxruntime") is not None:
        names.append("ocr:hashing-text")
    files = [Item("q", (images[0],)), Item("q", (images[1], images[2])), Item("none")]
    memory = [Item(it.text, tuple(MemoryImage(p.read_bytes()) for p in it.images))
              for it in files]
    for name in names:
        encoder = make_encoder(name)
        assert np.array_equal(encoder.encode_batch(memory), encoder.encode_batch(files)), name
    assert [it.content_hash("image") for it in memory] == \
        [it.content_hash("image") for it in files]
    assert "bytes" in repr(memory[0].images[0])


def test_an_image_that_opens_but_does_not_decode_is_an_image_decode_error() -> None:
    """Pillow raises ValueError for a truncated QOI ("not enough image data"), others raise
    RuntimeError or EOFError: every image encoder turns them into ImageDecodeError, an
    OSError, which the gateway answers with a 400."""
    import io

    from vlroute.features.base import ImageDecodeError

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "QOI")
    item = Item("q", (MemoryImage(buf.getvalue()[:200]),))
    names = ["efficientnet-lite0", "image-stats"]
    if importlib.util.find_spec("rapidocr_onnxruntime") is not None:
        names.append("ocr:hashing-text")
    for name in names:
        with pytest.raises(ImageDecodeError, match=r"does not decode \(ValueError"):
            make_encoder(name).encode_batch([item])
    assert issubclass(ImageDecodeError, OSError)
    with pytest.raises(ImageDecodeError, match="UnidentifiedImageError"):
        make_encoder("image-stats").encode_batch([Item("q", (MemoryImage(b"no image"),))])
    if "ocr:hashing-text" in names:       # OpenCV refuses a 32-bit integer image (cv2.error)
        tiff = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).convert("I").save(
            tiff, "TIFF")
        with pytest.raises(ImageDecodeError, match="does not decode"):
            make_encoder("ocr:hashing-text").encode_batch([Item("q", (MemoryImage(
                tiff.getvalue()),))])


def test_hub_image_encoders_with_tiny_models_built_from_configs(images: list[Path]) -> None:
    transformers = pytest.importorskip("transformers")
    from vlroute.features.image import HFImageEncoder

    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                                crop_size={"height": 32, "width": 32})
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=8)
    clip = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, vocab_size=100),
        vision_config=vision, projection_dim=12)).eval()
    dino = transformers.Dinov2Model(transformers.Dinov2Config(**vision)).eval()
    for model, width in ((clip, 12), (dino, 16)):
        encoder = HFImageEncoder((model, processor))
        out = encoder.encode([Item("q", (images[0],)), Item("q", (images[1],))])
        assert encoder.dim == width and out.shape == (2, width) and np.isfinite(out).all()
        none = encoder.encode_batch([Item("text only"), Item("q", (images[0],))])
        assert not none[0].any() and np.allclose(none[1], out[0], atol=1e-5)


def test_features_are_stored_beside_the_bench(tmp_path: Path) -> None:
    src = make_set(tmp_path / "set")
    bench = build_bench(READERS.get("jsonl")(src, tmp_path / "st"), tmp_path / "bench")
    compute_features(bench, {"hashing-text": make_encoder("hashing-text"),
                             "hashing-image": make_encoder("hashing-image")})
    X, spec = feature_matrix(bench, "hashing-text", "hashing-image")
    assert X.shape == (18, 128) and spec["text"] == "hashing-text-64"
    assert spec["fusion"] == "normalize_concat"
    with pytest.raises(BenchError, match="no features named 'minilm'"):
        feature_matrix(bench, "minilm", None)
    other = build_bench(READERS.get("jsonl")(make_set(tmp_path / "other", n_groups=2),
                                             tmp_path / "st2"), tmp_path / "b2")
    (other.root / "features").mkdir()
    for name in ("index.json", "hashing-text.npy"):
        (other.root / "features" / name).write_bytes((bench.root / "features" / name)
                                                     .read_bytes())
    with pytest.raises(BenchError, match="computed for other samples"):
        feature_matrix(other, "hashing-text", None)


def test_ocr_feature_reads_text_printed_in_the_image(tmp_path: Path) -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    from PIL import ImageDraw, ImageFont

    from vlroute.features.ocr import read_text

    path = tmp_path / "label.png"
    image = Image.new("RGB", (420, 120), "white")
    ImageDraw.Draw(image).text((20, 30), "AREA 42", fill="black",
                               font=ImageFont.load_default(size=48))
    image.save(path)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 100), "white").save(blank)
    assert "42" in read_text(path).replace(" ", "")
    encoder = make_encoder("ocr:hashing-text")
    assert encoder.encoder_id.startswith("ocr-rapidocr+") and encoder.modality == "image"
    vectors = encoder.encode([Item("q", (path,)), Item("q", (blank,)), Item("q")])
    assert np.abs(vectors[0]).sum() > 0 and not vectors[1].any() and not vectors[2].any()
    with pytest.raises(UnknownComponentError, match="needs a text encoder"):
        make_encoder("ocr:image-stats")
