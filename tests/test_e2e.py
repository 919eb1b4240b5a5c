"""End-to-end routers on token features: the token cache, the routers' contract, their labels,
ECVL's scenario conditioning, the CLI and the gateway (tiny networks, a few dozen requests)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_set, run_cli
from test_baselines import matrices

from vlroute.errors import BenchError, NotFittedError, ScenarioMismatchError
from vlroute.routers import E2E, E2E_POLICY, make_router
from vlroute.routers.e2e import label_targets
from vlroute.routers.persistence import load_router, save_router
from vlroute.scenarios import Scenario
from vlroute.tokens import Tokens

BOUNDS = (1e-4, 4e-3)
COSTS = np.array([1e-4, 4e-4, 4e-3, 2e-4])
TINY = {"d_model": 16, "n_heads": 2, "n_layers": 1, "learning_rate": 3e-3, "batch_size": 8,
        "max_epochs": 12, "patience": 12}


def learnable(n: int = 64, seed: int = 0, graded: bool = False) -> tuple[Tokens, Any]:
    """Two clusters told apart by the text tokens: the cheap model solves cluster 0, the mid
    model cluster 1, the dear model both, a fourth none; a third of the requests have no
    image. ``graded``: model 0 scores 5/10 on its cluster, model 1 scores 9/10 on its own."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 2, size=n)
    text = (rng.normal(size=(n, 8, 16)) * 0.3).astype(np.float32)
    text[:, :, 0] += np.where(cluster == 0, 2.0, -2.0)[:, None]
    text_mask = np.ones((n, 8), dtype=bool)
    text_mask[:, 6:] = False
    image = rng.normal(size=(n, 4, 12)).astype(np.float32)
    image_mask = np.ones((n, 4), dtype=bool)
    image_mask[::3] = False
    image[::3] = 0.0
    quality = np.stack([cluster == 0, cluster == 1, np.ones(n, bool), np.zeros(n, bool)],
                       axis=1).astype(float)
    if graded:
        quality[:, 0] *= 0.5
        quality[:, 1] *= 0.9
    return Tokens(text, text_mask, image, image_mask), matrices(quality, COSTS)


def fitted(name: str, **params: Any) -> tuple[Any, Tokens, Any]:
    X, m = learnable()
    return make_router(name, **{**TINY, **params}).fit(m, bounds=BOUNDS, X=X), X, m


@pytest.fixture(params=E2E)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_fits_routes_and_round_trips_identically(name: str, tmp_path: Path) -> None:
    router, X, m = fitted(name)
    assert getattr(router, "needs_tokens", False)
    policy = name in E2E_POLICY
    scenario = Scenario(cost_weight=0.0) if policy else Scenario(tau=0.6, mes=6)
    chosen = router.route(m, Scenario(cost_weight=0.0), X)
    assert chosen.shape == (len(X),) and chosen.min() >= 0 and chosen.max() < 4
    # a learned routing: better than always taking the cheapest model, and never the model
    # that is always wrong
    acc = m.quality[np.arange(len(X)), chosen].mean()
    assert acc > m.quality[:, 0].mean() + 0.2 and 3 not in set(chosen.tolist())
    again = make_router(name, **TINY).fit(m, bounds=BOUNDS, X=X)
    assert np.allclose(again.predictions_for(X, scenario), router.predictions_for(X, scenario))
    save_router(router, tmp_path / "art", feature_spec={"kind": "tokens"})
    assert not list((tmp_path / "art").glob("*.pkl"))
    loaded = load_router(tmp_path / "art", feature_spec={"kind": "tokens"})
    assert (loaded.route(m, scenario, X) == router.route(m, scenario, X)).all()
    assert np.array_equal(loaded.predictions_for(X, scenario), router.predictions_for(X, scenario))
    rows = np.array([5, 1, 7])                    # a batch of a few decides as the whole did
    assert np.allclose(router.predictions_for(X[rows], scenario),
                       router.predictions_for(X, scenario)[rows], atol=1e-5)


def test_policy_mode_refuses_other_scenarios_and_quality_mode_serves_them(name: str) -> None:
    router, X, m = fitted(name, max_epochs=1)
    if name in E2E_POLICY:
        for scenario in (Scenario(tau=0.6, mes=6), Scenario(cost_weight=0.3)):
            with pytest.raises(ScenarioMismatchError, match="policy router"):
                router.route(m, scenario, X)
    else:
        p = router.predictions_for(X, Scenario(tau=0.6, mes=6))
        assert p.shape == (len(X), 4) and (0 <= p).all() and (p <= 1).all()
        assert (router.route(m, Scenario(cost_weight=1e6), X) == 0).all()   # the cheapest


def test_inputs_are_checked() -> None:
    X, m = learnable()
    with pytest.raises(NotFittedError):
        make_router("vlc_q", **TINY).route(m, Scenario(cost_weight=0.0), X)
    with pytest.raises(ValueError, match="needs request features"):
        make_router("vlc", **TINY).fit(m, bounds=BOUNDS)
    with pytest.raises(ValueError, match="token features"):
        make_router("vlc", **TINY).fit(m, bounds=BOUNDS, X=np.zeros((len(X), 6)))
    router = make_router("ecvl", **{**TINY, "max_epochs": 1}).fit(m, bounds=BOUNDS, X=X)
    narrow = Tokens(X.text[:, :, :8], X.text_mask, X.image, X.image_mask)
    with pytest.raises(ValueError, match="fitted on"):
        router.route(m, Scenario(cost_weight=0.0), narrow)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        make_router("vlc", d_model=18, n_heads=4).fit(m, bounds=BOUNDS, X=X)


def test_lambda_labels_on_a_hand_example() -> None:
    quality = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    cost = np.array([[0.01, 0.001, 0.0001]] * 2)
    t, has = label_targets("vlc", quality, cost, 1.0, 100.0)
    # t(m) ∝ 1[correct] exp(-lambda * 100 * cost): exp(-1) and exp(-0.1)
    assert np.allclose(t[0], np.array([math.exp(-1), math.exp(-0.1), 0])
                       / (math.exp(-1) + math.exp(-0.1)))
    assert has.tolist() == [True, False]
    assert np.allclose(label_targets("vlc", quality, cost, 0.0)[0][0], [0.5, 0.5, 0.0])
    z, zhas = label_targets("zooter", quality, cost, 1.0)
    assert zhas.all() and z[1].tolist() == [0.0, 0.0, 1.0]      # unsolved: the cheapest
    assert label_targets("routerdc", quality, cost, math.inf)[0][0].tolist() == [0, 1, 0]
    assert label_targets("cosinecls", quality, cost, math.inf)[0][0].tolist() == [0.5, 0.5, 0]


def test_ecvl_conditions_on_mes_for_graded_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlroute.routers.e2e import ECVLRouter

    # what is tested is the network's MES conditioning: train all 60 epochs (no hold-out, so
    # no early stop at an epoch where the hold-out Rank Score has not moved yet)
    monkeypatch.setattr(ECVLRouter, "_holdout",
                        lambda self, train: np.zeros(train.n_samples, dtype=bool))
    X, m = learnable(graded=True)
    router = make_router("ecvl", **{**TINY, "max_epochs": 60, "patience": 60}).fit(
        m, bounds=BOUNDS, X=X)
    assert not router.binary_ and 5.0 in router.mes_grid_ and 9.0 in router.mes_grid_
    cluster0 = m.quality[:, 0] > 0
    low, high = router.predict_solved(X, 5.0), router.predict_solved(X, 9.0)
    # model 0 scores 5/10 on its cluster: it reaches MES 5 there, not MES 9
    assert low[cluster0, 0].mean() > 0.6 and high[cluster0, 0].mean() < 0.4
    assert low[~cluster0, 1].mean() > 0.6          # model 1 (9/10) reaches MES 5 on its own
    # threshold decisions follow: at MES 5 the cheap model takes its cluster; at MES 9 not
    at5 = router.route(m, Scenario(tau=0.5, mes=5), X)
    at9 = router.route(m, Scenario(tau=0.5, mes=9), X)
    assert (at5[cluster0] == 0).mean() > 0.8 and (at9[cluster0] == 0).mean() < 0.2
    # binary labels: the scenario token carries the cost dimension only
    binary = make_router("ecvl", **{**TINY, "max_epochs": 1}).fit(
        learnable()[1], bounds=BOUNDS, X=X)
    assert np.array_equal(binary.predict_solved(X, 4.0), binary.predict_solved(X, 8.0))


def test_quality_mode_graded_p_solved_is_refitted_per_mes() -> None:
    X, m = learnable(graded=True)
    router = make_router("vlc_q", **TINY).fit(m, bounds=BOUNDS, X=X)
    p4, p8 = router.predict_solved(X, 4.0), router.predict_solved(X, 8.0)
    cluster0 = m.quality[:, 0] > 0
    assert p4[cluster0, 0].mean() > 0.6 and p8[cluster0, 0].mean() < 0.4


# -- the token cache (real towers) and the CLI ---------------------------------------------
@pytest.fixture(scope="module")
def token_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    toy = make_set(root / "toy", n_groups=10, per_group=3)
    run_cli("bench", "build", toy, "--out", root / "b")
    return root / "b"


def test_token_cache_shapes_masks_and_ids(tmp_path: Path) -> None:
    from vlroute.data import load_bench
    from vlroute.features.base import Item
    from vlroute.features.tokens import TokenEncoder, load_tokens

    toy = make_set(tmp_path / "toy", n_groups=3, per_group=2)
    run_cli("bench", "build", toy, "--out", tmp_path / "b")
    out = run_cli("features", tmp_path / "b", "--tokens")
    assert "49 image x 1280" in out
    bench = load_bench(tmp_path / "b")
    tokens, spec = load_tokens(bench)
    assert tokens.shape == (6, 128, 384, 49, 1280)
    assert isinstance(tokens.text, np.memmap) and tokens.text.dtype == np.float16
    batch = tokens.batch()
    lengths = batch.text_mask.sum(axis=1)
    assert (lengths > 2).all() and (lengths < 128).all() and lengths[1] > lengths[0]
    assert not batch.text[~batch.text_mask].any() and batch.image_mask.all()
    assert spec["kind"] == "tokens" and spec["image"].startswith("efficientnet-lite0")
    # one request encodes as its stored row (what the gateway computes)
    encoder = TokenEncoder()
    item = Item(str(bench.samples["question"][3]),
                tuple(bench.root / p for p in bench.images["path"][
                    bench.images["sample_idx"] == 3]))
    one = encoder.encode_batch([item, Item("A question without an image.")]).batch()
    assert np.allclose(one.text[0], batch.text[3], atol=2e-3)
    assert np.allclose(one.image[0], batch.image[3], atol=2e-2)
    assert not one.image_mask[1].any() and not one.image[1].any()
    # the ids check: tokens computed for other samples are refused
    index_path = tmp_path / "b" / "features" / "index.json"
    index = json.loads(index_path.read_text())
    index["tokens"]["sample_ids_sha256"] = "0" * 64
    index_path.write_text(json.dumps(index))
    with pytest.raises(BenchError, match="other samples"):
        load_tokens(load_bench(tmp_path / "b"))
    del index["tokens"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(BenchError, match="--tokens"):
        load_tokens(load_bench(tmp_path / "b"))


def _tiny_params(names: tuple[str, ...]) -> list[str]:
    return [a for n in names for kv in ("d_model=16", "n_heads=2", "n_layers=1",
                                        "max_epochs=1")
            for a in ("--param", f"{n}.{kv}")]


def test_eval_runs_the_e2e_group(token_bench: Path, tmp_path: Path) -> None:
    run_cli("features", token_bench, "--tokens", "--text", "hashing-text", "--image",
            "hashing-image")
    out = run_cli("eval", token_bench, "--routers", "e2e", *_tiny_params(E2E),
                  "--scenario", "cost_weight@dev", "--scenario", "fast",
                  "--results", tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    routers = {r["router"] for r in doc["rows"]}
    assert set(E2E) <= routers and "knn" not in routers and "vlc" in out
    skipped = {(s["router"], s["scenario"]) for s in doc.get("skipped", [])}
    assert ("vlc", "fast") in skipped and ("ecvl", "fast") not in skipped
    lambdas = {c["router"]: [p["label_lambda"] for p in c["points"]] for c in doc["curves"]
               if c["parameter"] == "label_lambda"}
    assert lambdas["vlc"] == [0.0, 100.0, "inf"]


def test_gateway_serves_a_quality_mode_e2e_bundle(token_bench: Path, tmp_path: Path) -> None:
    from test_serve import Upstream, client, config, png_url

    from vlroute.serve.config import ConfigError, GatewayConfig
    from vlroute.serve.requests import Prompt, prompt_of
    from vlroute.serve.routing import RoutingEngine

    run_cli("features", token_bench, "--tokens", "--text", "hashing-text", "--image",
            "hashing-image")
    models = ["small-2b", "gpt-4o-2024-08-06"]
    run_cli("train", "vlc_q", token_bench, "--models", ",".join(models),
            *[a.replace("vlc_q.", "") for a in _tiny_params(("vlc_q",))],
            "--out", tmp_path / "art")
    out = run_cli("eval", token_bench, "--artifact", tmp_path / "art")
    assert "(bundle)" in out
    base = config(tmp_path)
    cfg = GatewayConfig.model_validate({
        **base.model_dump(), "router": {"artifact": tmp_path / "art",
                                        "text_encoder": "hashing-text",
                                        "image_encoder": "hashing-image"},
        "backends": [{**b.model_dump(), "router_model": m}
                     for b, m in zip(base.backends, models, strict=True)]})
    with client(cfg, Upstream()) as c:
        assert c.get("/health").json()["router"] == "VLCQualityRouter"
        body = {"model": "vlroute/quality", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is shown?"},
            {"type": "image_url", "image_url": {"url": png_url()}}]}]}
        decision = c.post("/v1/route", json=body).json()
        assert decision["predicted"] != {"edge": 0.7, "cloud": 0.9}        # not the priors
        assert all(0 <= p <= 1 for p in decision["predicted"].values())
        reply = c.post("/v1/chat/completions", json={
            "model": "vlroute/auto", "messages": [{"role": "user", "content": "2 + 2?"}]})
        assert reply.status_code == 200, reply.text
    engine = RoutingEngine.from_config(cfg)
    prompts = [prompt_of(body, cfg), Prompt("What is 2 + 2?")]
    scenarios = [cfg.scenario("quality"), cfg.scenario("cost_weight=0.1")]
    together = engine.router_rows(prompts, scenarios)
    for prompt, scenario, row in zip(prompts, scenarios, together, strict=True):
        assert np.allclose(engine.router_rows([prompt], [scenario])[0], row, atol=1e-5)
    wrong = GatewayConfig.model_validate({**cfg.model_dump(), "router": {
        "artifact": tmp_path / "art", "text_encoder": "hashing-text",
        "image_encoder": "efficientnet-lite0"}})
    with pytest.raises(ConfigError, match="trained on image tokens"), \
            client(wrong, Upstream()):
        pass


def test_cutting_the_padding_changes_no_output() -> None:
    # the last two text positions are padding everywhere, and a batch of image-less requests
    # has no real image token: the cut tensors must give the uncut ones' embeddings
    import torch

    from vlroute.routers._fusion import to_tensors
    router, X, _ = fitted("vlc_q")
    net = router._network()
    rows = np.arange(0, 12, 3)                     # every third request has no image
    cut = to_tensors(torch, X, rows)
    b = X.batch(rows)
    full = tuple(torch.from_numpy(a) for a in (b.text, b.text_mask, b.image, b.image_mask))
    assert cut[0].shape[1] == 6 and cut[2].shape[1] == 0 and full[0].shape[1] == 8
    with torch.no_grad():
        np.testing.assert_allclose(net.embed(*cut).numpy(), net.embed(*full).numpy(),
                                   atol=1e-5)


def _tiny_towers(root: Path) -> dict[str, Path]:
    """A ViT (tokens) and a ResNet (a feature map) built from configs, saved as a user's
    local checkpoints are: what ``--image hf:<path>`` loads, without the hub."""
    import transformers

    towers = {"vit": root / "vit", "resnet": root / "resnet"}
    transformers.ViTModel(transformers.ViTConfig(
        image_size=32, patch_size=16, hidden_size=24, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32)).save_pretrained(towers["vit"])
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(
        towers["vit"])
    transformers.ResNetModel(transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1])).save_pretrained(
        towers["resnet"])
    transformers.ConvNextImageProcessor(size={"shortest_edge": 64},
                                        crop_pct=1.0).save_pretrained(towers["resnet"])
    return towers


def test_hub_image_towers_load_by_path_and_feed_the_token_routers(tmp_path: Path) -> None:
    from vlroute.data import load_bench
    from vlroute.errors import UnknownComponentError
    from vlroute.features.base import Item
    from vlroute.features.tokens import TokenEncoder, load_tokens

    pytest.importorskip("transformers")
    towers = _tiny_towers(tmp_path / "towers")
    toy = make_set(tmp_path / "toy", n_groups=6, per_group=2)
    run_cli("bench", "build", toy, "--out", tmp_path / "b")
    out = run_cli("features", tmp_path / "b", "--tokens", "--text", "hashing-text",
                  "--image", f"hf:{towers['vit']}")
    assert "5 image x 24" in out                       # 2 x 2 patches and the CLS token
    bench = load_bench(tmp_path / "b")
    tokens, spec = load_tokens(bench)
    assert spec["image"] == f"hf:{towers['vit']}:last_hidden_state"
    batch = tokens.batch()
    assert batch.image_mask.all() and np.abs(batch.image).sum(axis=(1, 2)).min() > 0
    encoder = TokenEncoder("hashing-text", f"hf:{towers['vit']}")
    item = Item("q", tuple(bench.root / p for p in bench.images["path"][
        bench.images["sample_idx"] == 2]))
    assert np.allclose(encoder.encode_batch([item]).batch().image[0], batch.image[2],
                       atol=1e-2)
    resnet = TokenEncoder("hashing-text", f"hf:{towers['resnet']}")
    assert (resnet.image_len, resnet.image_dim) == (64, 12)     # an 8 x 8 map of 12
    assert resnet.encode_batch([item]).image.shape == (1, 64, 12)
    with pytest.raises(UnknownComponentError, match="cannot load the image tower"):
        _ = TokenEncoder("hashing-text", f"hf:{tmp_path / 'nothing'}").image_len
    out = run_cli("eval", tmp_path / "b", "--routers", "vlc", *_tiny_params(("vlc",)),
                  "--scenario", "cost_weight@dev", "--results", tmp_path / "r.json")
    assert any(r["router"] == "vlc" for r in json.loads((tmp_path / "r.json").read_text())
               ["rows"])


def _tiny_text_tower(root: Path) -> Path:
    """A two-layer BERT sentence-transformer built from a config (and a word-level vocab),
    saved as a user's local checkpoint is: what ``--text st:<path>`` loads."""
    import transformers
    from sentence_transformers import SentenceTransformer
    try:                                             # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer

    words = ("what is the area of shaded part find missing number a question without an "
             "image choice yes no graph").split()
    (root / "bert").mkdir(parents=True)
    vocab = root / "bert" / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    transformers.BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(root / "bert")
    transformers.BertModel(transformers.BertConfig(
        vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=128)).save_pretrained(root / "bert")
    body = Transformer(str(root / "bert"), max_seq_length=128)
    tower = SentenceTransformer(modules=[body, Pooling(16)], device="cpu")
    tower.save(str(root / "tower"))
    return root / "tower"


def test_tuning_the_text_towers_last_layer(tmp_path: Path) -> None:
    import torch

    from vlroute.data import load_bench
    from vlroute.errors import UnknownComponentError
    from vlroute.features.base import Item
    from vlroute.features.tokens import TokenEncoder, load_tokens
    from vlroute.routers._fusion import bert_layer
    from vlroute.towers import last_text_layer

    tower = f"st:{_tiny_text_tower(tmp_path)}"
    # the layer written out equals the tower's own: its last layer on the penultimate
    # states gives the last states (up to the float16 rounding both go through)
    items = [Item("what is the area of the shaded part"), Item("find the missing number")]
    last = TokenEncoder(tower, "hashing-image").encode_batch(items)
    penultimate = TokenEncoder(tower, "hashing-image",
                               text_states="penultimate").encode_batch(items)
    assert penultimate.text_states == "penultimate" and penultimate.text_tower == tower
    assert not np.allclose(last.text, penultimate.text, atol=1e-2)
    shape, weights = last_text_layer(tower)
    layer = bert_layer(shape)
    layer.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    with torch.no_grad():
        out = layer.eval()(torch.from_numpy(penultimate.text),
                           torch.from_numpy(penultimate.text_mask)).numpy()
    mask = last.text_mask
    np.testing.assert_allclose(out[mask], last.text[mask], atol=1e-2)
    with pytest.raises(UnknownComponentError, match="no layers"):
        last_text_layer("hashing-text")

    # a bench with penultimate states: a router fine-tunes the layer, round-trips, and
    # refuses tokens of the last layer
    toy = make_set(tmp_path / "toy", n_groups=8, per_group=3)
    run_cli("bench", "build", toy, "--out", tmp_path / "b")
    out = run_cli("features", tmp_path / "b", "--tokens", "--text", tower, "--image",
                  "hashing-image", "--text-states", "penultimate")
    assert "x 16" in out
    bench = load_bench(tmp_path / "b")
    tokens, spec = load_tokens(bench)
    assert spec["text"].endswith(":penultimate") and tokens.text_states == "penultimate"
    m = bench.matrices()
    router = make_router("vlc_q", **{**TINY, "max_epochs": 2, "tune_text_layer": True}).fit(
        m, bounds=BOUNDS, X=tokens)
    assert router.text_layer_ == shape
    tuned = router.state_["text_layer.query.weight"]
    assert tuned.shape == (16, 16) and not np.allclose(tuned, weights["query.weight"])
    save_router(router, tmp_path / "art")
    again = load_router(tmp_path / "art")
    np.testing.assert_allclose(again.predict_quality(tokens), router.predict_quality(tokens),
                               atol=1e-6)
    frozen = Tokens(tokens.text, tokens.text_mask, tokens.image, tokens.image_mask,
                    text_tower=tower)
    with pytest.raises(ValueError, match="reads the text tower's penultimate states"):
        again.predict_quality(frozen)
    with pytest.raises(ValueError, match="--text-states penultimate"):
        make_router("vlc_q", **TINY, tune_text_layer=True).fit(m, bounds=BOUNDS, X=frozen)
    # a frozen router remembers the states it was fitted on, both ways; a refit starts afresh
    plain = make_router("vlc_q", **{**TINY, "max_epochs": 1}).fit(m, bounds=BOUNDS, X=frozen)
    with pytest.raises(ValueError, match="fitted on the text tower's last states"):
        plain.predict_quality(tokens)
    plain.fit(m, bounds=BOUNDS, X=tokens)
    assert plain.predict_quality(tokens).shape == (len(tokens), m.n_models)
    # the policy routers and ECVL take the flag too, and round-trip
    for name in ("vlc", "ecvl"):
        other = make_router(name, **{**TINY, "max_epochs": 1, "tune_text_layer": True}).fit(
            m, bounds=BOUNDS, X=tokens)
        save_router(other, tmp_path / name)
        scenario = Scenario("utility", cost_weight=0.0)
        assert (load_router(tmp_path / name).route(m, scenario, X=tokens)
                == other.route(m, scenario, X=tokens)).all()
    from click.testing import CliRunner

    from vlroute.cli import cli
    result = CliRunner().invoke(cli, ["features", str(tmp_path / "b"), "--text-states",
                                      "penultimate"])
    assert result.exit_code == 2 and "add --tokens" in result.output

    # the gateway encodes requests with the states the bundle was trained on
    from test_serve import config

    from vlroute.serve.config import GatewayConfig
    from vlroute.serve.requests import Prompt
    from vlroute.serve.routing import RoutingEngine

    models = list(m.models[:2])
    run_cli("train", "vlc_q", tmp_path / "b", "--models", ",".join(models), "--param",
            "tune_text_layer=true", *[a.replace("vlc_q.", "") for a in _tiny_params(
                ("vlc_q",))], "--out", tmp_path / "bundle")
    base = config(tmp_path)
    cfg = GatewayConfig.model_validate({
        **base.model_dump(), "router": {"artifact": tmp_path / "bundle",
                                        "text_encoder": tower,
                                        "image_encoder": "hashing-image"},
        "backends": [{**b.model_dump(), "router_model": name}
                     for b, name in zip(base.backends, models, strict=True)]})
    engine = RoutingEngine.from_config(cfg)
    assert engine.token_encoder.text_states == "penultimate"
    served = engine.router_rows([Prompt("find the missing number")],
                                [cfg.scenario("quality")])[0]
    assert np.isfinite(served).all()
