"""The ONNX routing path: ``vlroute export onnx`` writes MiniLM and EfficientNet-Lite0 as
ONNX into a bundle; the onnx runtime computes the same features as torch (to 1e-4), the
gateway decides the same on both runtimes, and the onnx path routes with torch unimportable.

One small bundle (a toy set with the real encoders' features, a kNN router) is trained and
exported once for the module (about 30 s, most of it loading and exporting the encoders).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_set
from conftest import run_cli as run
from fastapi.testclient import TestClient

from vlroute.data import load_bench
from vlroute.demo_data import demo_set_path
from vlroute.features.base import Item
from vlroute.features.onnx import OnnxImageEncoder, OnnxTextEncoder
from vlroute.features.registry import make_encoder
from vlroute.routers.persistence import IncompatibleArtifactError
from vlroute.serve.app import create_app
from vlroute.serve.config import ConfigError, GatewayConfig, RouterSettings
from vlroute.serve.edge import (
    MANIFEST,
    export_onnx,
    feature_encoders,
    read_manifest,
    route_once,
)
from vlroute.serve.replay import replay_config, replay_requests
from vlroute.serve.requests import Prompt

DEMO = demo_set_path()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx", reason="the export needs `pip install -e '.[dev]'` (onnx)")
    root = tmp_path_factory.mktemp("edge")
    make_set(root / "toy", n_groups=8, per_group=3)
    run("bench", "build", root / "toy", "--out", root / "bench")
    run("features", root / "bench")                         # MiniLM + EfficientNet-Lite0
    run("train", "knn", root / "bench", "--out", root / "knn", "--param", "n_neighbors=3")
    out = run("export", "onnx", root / "knn", "--quantize", "int8", "--calibration",
              root / "toy" / "images")
    assert "text_encoder.onnx" in out and "predicts with numpy" in out
    return root


def _demo_items(n: int = 6) -> list[Item]:
    rows = [json.loads(line) for line in
            (DEMO / "samples.jsonl").read_text("utf-8").splitlines()[:n]]
    return [Item(r["question"], tuple(DEMO / p for p in r["images"])) for r in rows]


def test_export_writes_every_file_and_the_manifest_last(built: Path) -> None:
    art = built / "knn"
    manifest = read_manifest(art)
    assert manifest is not None and manifest["variants"] == ["fp32", "int8"]
    text, image = manifest["encoders"]["text"], manifest["encoders"]["image"]
    assert text["encoder_id"] == make_encoder("minilm").encoder_id
    assert text["max_length"] == 256 and text["files"]["int8"] == "text_encoder.int8.onnx"
    assert image["encoder_id"] == "efficientnet-lite0@57934424"
    assert image["files"]["int8"] == "image_encoder.int8.onnx"
    assert image["calibration"]["images"] == 24
    for entry in (text, image):
        for name in entry["sha256"]:
            assert (art / name).stat().st_size > 100_000
    assert not [p.name for p in art.iterdir() if p.name.startswith(".")]   # no temp file left


def test_the_router_graph_decides_as_the_bundle_on_the_bench(built: Path) -> None:
    """router.onnx on the bench's own fused features: eval's predictions and decisions."""
    import onnx

    from vlroute.features.store import feature_matrix
    from vlroute.routers.bundle import load_bundle
    from vlroute.routers.onnx_graph import graph_outputs

    art = built / "knn"
    manifest = read_manifest(art)
    assert manifest is not None
    router = manifest["router"]
    assert router["graph"] == "router.onnx" and router["predicts_with"] == "numpy"
    assert set(router["sha256"]) == {"router.onnx"}
    X, spec = feature_matrix(load_bench(built / "bench"), "minilm", "efficientnet-lite0")
    bundle = load_bundle(art, feature_spec=spec)
    got = graph_outputs(onnx.load(str(art / "router.onnx")), X)
    want = bundle.predictions(X, bundle.scenario)
    assert np.abs(got - want).max() < 1e-9
    assert np.array_equal(bundle.decide(got, bundle.scenario),
                          bundle.decide(want, bundle.scenario))


def test_onnx_features_equal_torchs(built: Path) -> None:
    art = built / "knn"
    manifest = read_manifest(art)
    assert manifest is not None
    entry = manifest["encoders"]["text"]
    text = OnnxTextEncoder(art / "text_encoder.onnx", art / "text_tokenizer.json",
                           encoder_id=entry["encoder_id"], dim=384, max_length=256)
    image = OnnxImageEncoder(art / "image_encoder.onnx", encoder_id="e", dim=1280)
    items = _demo_items()
    # a long text (truncated at 256 tokens) and one without images pad the batch
    items += [Item("Find the area of the triangle ABC. " * 60), Item("")]
    got_text, want_text = text.encode_batch(items), make_encoder("minilm").encode_batch(items)
    assert np.abs(got_text - want_text).max() < 1e-4
    got_image = image.encode_batch(items)
    want_image = make_encoder("efficientnet-lite0").encode_batch(items)
    assert np.abs(got_image - want_image).max() < 1e-4
    assert not got_image[-1].any() and np.abs(got_image[0]).max() > 0.1


def test_int8_text_features_do_not_depend_on_the_batch(built: Path) -> None:
    """Dynamic int8 quantises activations over the batch: the gateway's int8 text encoder runs
    one text at a time, so a request's features (and decision) ignore its neighbours."""
    art = built / "knn"
    feature_encoders_ = feature_encoders(RouterSettings(runtime="onnx", onnx_variant="int8"),
                                         art)[0]
    text = feature_encoders_["text"]
    assert isinstance(text, OnnxTextEncoder) and text.one_at_a_time
    items = [Item("Which bike is red?"), Item("Find the area of the triangle ABC. " * 40)]
    alone = text.encode_batch(items[:1])
    assert np.array_equal(text.encode_batch(items)[:1], alone)
    batched = OnnxTextEncoder(text.model, text.tokenizer, encoder_id="t", dim=384)
    assert not np.array_equal(batched.encode_batch(items)[:1], batched.encode_batch(items[:1]))
    assert text.encode_batch([]).shape == (0, 384)


def _decisions(art: Path, bench: Path, tmp: Path, runtime: str, variant: str = "fp32"
               ) -> tuple[dict[str, Any], dict[str, tuple[str, dict[str, float]]]]:
    doc = json.loads((art / "router.json").read_text())
    cfg = replay_config(art, doc["bundle"]["candidates"], "minilm", "efficientnet-lite0",
                        f"sqlite:///{tmp / f'{runtime}-{variant}.db'}")
    cfg["router"].update(runtime=runtime, onnx_variant=variant)
    b = load_bench(bench)
    served = {}
    with TestClient(create_app(GatewayConfig.model_validate(cfg))) as client:
        health = client.get("/health").json()["routing"]
        for sid, body in replay_requests(b, [str(s) for s in b.samples["sample_id"]]):
            reply = client.post("/v1/route", json=body)
            assert reply.status_code == 200, reply.text
            served[sid] = (reply.json()["router_model"], reply.json()["predicted"])
    return health, served


def test_the_gateway_decides_the_same_on_both_runtimes(built: Path, tmp_path: Path) -> None:
    art, bench = built / "knn", built / "bench"
    health_t, torch_rows = _decisions(art, bench, tmp_path, "torch")
    health_o, onnx_rows = _decisions(art, bench, tmp_path, "onnx")
    assert health_t["runtime"] == "torch" and health_o["runtime"] == "onnx-fp32"
    assert len(torch_rows) == 24
    assert {s: r[0] for s, r in onnx_rows.items()} == {s: r[0] for s, r in torch_rows.items()}
    for sid, (_, predicted) in onnx_rows.items():
        for backend, value in predicted.items():
            assert value == pytest.approx(torch_rows[sid][1][backend], abs=1e-6)
    health_auto, _ = _decisions(art, bench, tmp_path, "auto", "int8")
    assert health_auto["runtime"] == "onnx-int8"         # auto: the bundle carries graphs


_NO_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "sentence_transformers", "transformers"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def test_the_onnx_path_routes_without_torch(built: Path, tmp_path: Path) -> None:
    art = built / "knn"
    image = built / "toy" / "images" / "G1_v1.png"
    script = _NO_TORCH + textwrap.dedent(f"""
        import json, sys
        from vlroute.serve.edge import route_once
        from vlroute.serve.requests import Prompt
        out = route_once({str(art)!r}, Prompt("What is shown?", (open({str(image)!r}, "rb")
                         .read(),)), "auto", {{"runtime": "onnx"}})
        from fastapi.testclient import TestClient
        from vlroute.serve.app import create_app
        from vlroute.serve.config import GatewayConfig
        from vlroute.serve.replay import replay_config
        cfg = replay_config({str(art)!r}, list(out["predicted"]), "minilm",
                            "efficientnet-lite0", "sqlite:///{tmp_path / 't.db'}")
        with TestClient(create_app(GatewayConfig.model_validate(cfg))) as client:
            health = client.get("/health").json()["routing"]
            reply = client.post("/v1/route", json={{"messages": [
                {{"role": "user", "content": "What is shown?"}}]}})
        print(json.dumps({{"route": out, "runtime": health["runtime"],
                          "status": reply.status_code,
                          "loaded": sorted(m for m in sys.modules if m.startswith("torch"))}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["loaded"] == [] and got["runtime"] == "onnx-fp32" and got["status"] == 200
    assert got["route"]["runtime"] == "onnx-fp32"
    assert set(got["route"]["predicted"]) == {"small-2b", "big-72b", "gpt-4o-2024-08-06"}
    # the same request on the torch runtime chooses the same model
    torch_out = json.loads(run("route", art, "--text", "What is shown?", "--image", image,
                               "--runtime", "torch", "--json"))
    assert torch_out["model"] == got["route"]["model"] and torch_out["runtime"] == "torch"


def test_route_cli(built: Path) -> None:
    art = built / "knn"
    out = run("route", art, "--text", "What is shown? What is shown?")
    assert out.strip() in {"small-2b", "big-72b", "gpt-4o-2024-08-06"}
    doc = json.loads(run("route", art, "--text", "2+2?", "--scenario", "cost_weight=0",
                         "--variant", "int8", "--json"))
    assert doc["runtime"] == "onnx-int8" and doc["scenario"].startswith("cost_weight=0")
    assert all(0.0 <= v <= 1.0 for v in doc["predicted"].values())
    candidates = json.loads((art / "router.json").read_text())["bundle"]["candidates"]
    assert doc["predicted"][doc["model"]] == max(doc["predicted"][m] for m in candidates)


def test_refusals_say_what_is_wrong(built: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from vlroute.cli import cli

    result = CliRunner().invoke(cli, ["route", str(built / "knn")])
    assert result.exit_code != 0 and "--text and/or --image" in result.output
    # a bundle trained on other features has nothing to export
    run("features", built / "bench", "--text", "hashing-text", "--image", "hashing-image")
    hashed = tmp_path / "hashed"
    run("train", "knn", built / "bench", "--features", "hashing-text,hashing-image",
        "--out", hashed)
    with pytest.raises(IncompatibleArtifactError, match="exports minilm"):
        export_onnx(hashed)
    settings = RouterSettings(artifact=hashed, runtime="onnx")
    with pytest.raises(ConfigError, match=r"carries no ONNX graphs.*vlroute export onnx"):
        feature_encoders(settings, hashed)
    # auto without graphs is torch; a bundle exported without int8 refuses the int8 variant
    assert feature_encoders(RouterSettings(runtime="auto", text_encoder="hashing-text",
                                           image_encoder="hashing-image"), hashed)[1] == "torch"
    manifest = read_manifest(built / "knn")
    assert manifest is not None
    fp32_only = tmp_path / "fp32-only"
    fp32_only.mkdir()
    for entry in manifest["encoders"].values():
        entry["files"].pop("int8")
    (fp32_only / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"no int8 text graph.*--quantize int8"):
        feature_encoders(RouterSettings(runtime="onnx", onnx_variant="int8"), fp32_only)
    with pytest.raises(ConfigError, match=r"named by onnx\.json but missing"):
        feature_encoders(RouterSettings(runtime="onnx"), fp32_only)


def test_end_to_end_routers_are_refused_with_the_reason(tmp_path: Path) -> None:
    from vlroute.serve.edge import _check_exportable

    doc = {"router": "vlc", "feature_spec": {"kind": "tokens"}, "bundle": {}}
    with pytest.raises(IncompatibleArtifactError, match=r"end-to-end router.*runtime: torch"):
        _check_exportable(tmp_path, doc)
    with pytest.raises(IncompatibleArtifactError, match="without a serving bundle"):
        _check_exportable(tmp_path, {"router": "knn", "feature_spec": {"text": "x"}})


_ONLY_LITE = """
import importlib.abc, sys
HEAVY = ("torch", "sentence_transformers", "transformers", "pandas", "pyarrow", "sklearn",
         "scipy", "lightgbm", "fastapi", "starlette", "pydantic", "click", "rich", "yaml",
         "matplotlib", "onnx")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def test_the_lite_runtime_decides_as_the_gateway(built: Path) -> None:
    """python -m vlroute.serve.lite: the encoders' graphs, router.onnx and the bundle's
    decision rule, importing none of the gateway's dependencies, decide as the gateway."""
    from vlroute.serve.lite import LiteRouter

    art = built / "knn"
    lite = LiteRouter(art)
    images = sorted((built / "toy" / "images").iterdir())[:4]
    for text, image in [("What is shown?", images[0]), ("Find the area.", images[1]),
                        ("Which is larger?", None)]:
        data = (image.read_bytes(),) if image else ()
        for scenario in ("auto", "cost_weight=0.9", "quality"):
            got = lite.decide(text, data, scenario)
            want = route_once(art, Prompt(text, data), scenario, {"runtime": "onnx"})
            assert got["model"] == want["model"] and got["scenario"] == want["scenario"]
            assert max(abs(got["predicted"][m] - want["predicted"][m])
                       for m in want["predicted"]) < 1e-9
    script = _ONLY_LITE + textwrap.dedent(f"""
        from vlroute.serve.lite import main
        code = main([{str(art)!r}, "--text", "What is shown?", "--image", {str(images[0])!r},
                     "--json"])
        print(sorted(m for m in sys.modules if m.split(".")[0] in HEAVY))
        sys.exit(code)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    decision, loaded = proc.stdout.strip().splitlines()[-2:]
    assert loaded == "[]"
    assert json.loads(decision)["model"] == lite.decide("What is shown?",
                                                        (images[0].read_bytes(),))["model"]


def test_the_lite_runtime_refuses_with_the_reason(built: Path, tmp_path: Path) -> None:
    from vlroute.serve.lite import LiteError, LiteRouter, main

    art = tmp_path / "knn"
    art.mkdir()
    for f in (built / "knn").iterdir():
        (art / f.name).symlink_to(f)
    (art / "onnx.json").unlink()
    manifest = json.loads((built / "knn" / "onnx.json").read_text())
    manifest["router"] = {"name": "gbdt", "predicts_with": "lightgbm", "graph": None,
                          "why": "no ONNX graph for GBDTRouter"}
    (art / "onnx.json").write_text(json.dumps(manifest))
    with pytest.raises(LiteError, match="no ONNX graph for GBDTRouter"):
        LiteRouter(art)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    assert main([str(built / "knn"), "--text", "q", "--image", str(broken)]) == 2
    assert main([str(tmp_path / "nowhere"), "--text", "q"]) == 2
