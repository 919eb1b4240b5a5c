from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vlroute.costs import Catalog
from vlroute.costs import image_tokens as it
from vlroute.costs.estimate import SampleInputs, estimate_pairs
from vlroute.costs.expressions import evaluate
from vlroute.errors import CatalogError


def one(rule, w: float, h: float) -> float:
    return float(rule(np.array([w]), np.array([h]))[0])


@pytest.mark.parametrize(("rule", "w", "h", "tokens"), [
    (it.openai_4o, 1024, 1024, 85 + 170 * 4),     # shortest side 768 -> 2 x 2 tiles
    (it.openai_4o, 512, 512, 85 + 170),
    (it.openai_4o_mini, 512, 512, 2833 + 5667),
    (it.claude, 1000, 750, 1000),
    (it.claude, 3136, 1568, 1568 * 784 / 750),  # halved to fit 1,568
    (it.qwen2_vl, 640, 480, 23 * 17 + 2),         # 644 x 476 -> 23 x 17 blocks
    (it.qwen2_vl, 10, 10, 2 * 2 + 2),             # lifted to the 3,136 pixel minimum
    (it.internvl2, 448, 448, 256),
    (it.internvl2, 896, 448, 256 * 3),            # 2 tiles + thumbnail
    (it.llava_next, 336, 336, 576 + 576 * 2),
    (it.llava_next, 2000, 2000, 576 + 576 * 4),   # never more than 2,880
    (it.pixtral, 1024, 512, 64 * 32 + 32),
    (it.pixtral, 2048, 1024, 64 * 32 + 32),
    (it.llama_32_vision, 1200, 1200, 1601 * 4),
    (it.phi_35_vision, 336, 336, 144 * 2),
])
def test_image_token_rules_by_hand(rule, w: float, h: float, tokens: float) -> None:
    assert one(rule, w, h) == pytest.approx(np.ceil(tokens))


def test_every_catalog_rule_is_implemented() -> None:
    catalog = Catalog.default()
    for name in catalog.data["image_tokens"]:
        assert one(catalog.image_rule(name), 640, 480) > 0


def test_model_economics_follow_the_catalog() -> None:
    catalog = Catalog.default()
    gpt = catalog.economics("gpt-4o-2024-08-06", params_b=None, open_weights=False)
    assert (gpt.price_in, gpt.price_out, gpt.price_status, gpt.tier, gpt.profile) == \
        (2.5, 10.0, "list", "cloud", "cloud_api")
    qwen7 = catalog.economics("Qwen2-VL-7B-Instruct", params_b=7, open_weights=True)
    assert (qwen7.price_in, qwen7.tier, qwen7.image_rule, qwen7.price_status) == \
        (0.2, "edge", "qwen2-vl", "tier")
    cot = catalog.economics("gemini-pro-vision@cot", params_b=None, open_weights=False)
    assert cot.price_in == 0.5 and cot.price_status == "approx"
    sphinx = catalog.economics("sphinx-moe", params_b=None, open_weights=True)
    assert sphinx.params_b == 47 and sphinx.price_in == 0.8 and sphinx.tier == "cloud"
    unknown = catalog.economics("mystery-api", params_b=None, open_weights=False)
    assert unknown.price_status == "unknown-api" and unknown.price_in == 2.5
    unknown_open = catalog.economics("mystery-open", params_b=None, open_weights=True)
    assert unknown_open.price_status == "unknown-size" and unknown_open.tier == "cloud"
    flash8b = catalog.economics("gemini-1.5-flash-8b-001", params_b=None, open_weights=False)
    assert flash8b.tier == "cloud"


def test_latency_profiles() -> None:
    catalog = Catalog.default()
    edge = catalog.rates(catalog.economics("m", params_b=7, open_weights=True))
    assert edge["prefill_tokens_per_s"] == pytest.approx(1000)
    assert edge["decode_tokens_per_s"] == pytest.approx(20)
    big = catalog.rates(catalog.economics("m", params_b=72, open_weights=True))
    assert big["decode_tokens_per_s"] == pytest.approx(2800 / 72)


def test_override_yaml_merges(tmp_path: Path) -> None:
    override = tmp_path / "costs.yaml"
    override.write_text("models:\n  my-edge-vlm: {price: [0.01, 0.02], status: list, "
                        "tier: edge}\nimage_tokens:\n  mine: {tokens_per_image: 100}\n")
    catalog = Catalog.load(override)
    econ = catalog.economics("my-edge-vlm", params_b=None, open_weights=True)
    assert (econ.price_in, econ.tier) == (0.01, "edge")
    assert one(catalog.image_rule("mine"), 10, 10) == 100
    assert "gpt-4o-mini" in catalog.data["models"]  # the defaults are kept


def test_bad_catalogs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="missing catalog section"):
        Catalog.from_mapping({"models": {}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_tokens:\n  weird: {rule: 'something'}\n")
    with pytest.raises(CatalogError, match="Unknown image-token rule 'weird'"):
        Catalog.load(bad)
    with pytest.raises(CatalogError, match="Unknown name"):
        evaluate("7000 / size", {"params_b": 7})
    with pytest.raises(CatalogError, match="Unsupported"):
        evaluate("__import__('os')", {"params_b": 7})


def test_estimates_by_hand_and_measured_values_win() -> None:
    catalog = Catalog.default()
    econ = [catalog.economics("edge-7b", params_b=7, open_weights=True),
            catalog.economics("gpt-4o-2024-08-06", params_b=None, open_weights=False)]
    samples = SampleInputs(text_chars=np.array([40.0]), image_sample=np.array([0]),
                           image_w=np.array([512.0]), image_h=np.array([512.0]),
                           image_bytes=np.array([2_500_000.0]))
    pairs = estimate_pairs(catalog, econ, samples, np.array([0, 0]), np.array([0, 1]),
                           response_chars=np.array([np.nan, 8.0]),
                           measured={"latency_s": np.array([np.nan, 0.5])})
    v = pairs.values
    assert v["tokens_in"].tolist() == [10 + 576, 10 + 255]      # default rule / 4o: 85 + 170
    assert v["tokens_out"].tolist() == [256, 2]
    assert v["cost_usd"][1] == pytest.approx((265 * 2.5 + 2 * 10) / 1e6)
    # edge: no network; 586 / 1000 prefill + 256 / 20 decode
    assert v["latency_s"][0] == pytest.approx(586 / 1000 + 256 / 20)
    assert v["latency_s"][1] == 0.5 and not pairs.estimated["latency_s"][1]
    assert v["energy_j"][0] == pytest.approx(25 * (586 / 1000 + 256 / 20))
    cloud_compute = 265 / 5000 + 2 / 60
    assert v["energy_j"][1] == pytest.approx(100 * cloud_compute + 0.5 * 2.5)
