"""Routing predictions of concurrent requests are computed in batches, and one bad request
cannot fail the others in its batch."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from vlroute.scenarios import parse_scenario
from vlroute.serve.batching import PredictionBatcher
from vlroute.serve.requests import Prompt


class FakeEngine:
    """router_rows that records batch sizes and chokes on the text "boom"."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def router_rows(self, prompts: list[Prompt], scenarios: list[Any]) -> list[np.ndarray]:
        self.batches.append(len(prompts))
        if any(p.text == "boom" for p in prompts):
            raise ValueError("cannot encode boom")
        return [np.array([len(p.text), float(s.family == "utility")])
                for p, s in zip(prompts, scenarios, strict=True)]


def run(texts: list[str], max_batch: int = 32, engines: int = 1,
        max_pending: int = 2048) -> tuple[list[Any], list[int]]:
    fakes = [FakeEngine() for _ in range(engines)]

    async def main() -> list[Any]:
        batcher = PredictionBatcher(max_batch=max_batch, max_pending=max_pending)
        out = await asyncio.gather(*(batcher.predict(
            fakes[k * engines // len(texts)], Prompt(t),  # type: ignore[arg-type]
            parse_scenario("cost_weight=0.1" if k % 2 else "mes=6,tau=0.6"))
            for k, t in enumerate(texts)), return_exceptions=True)
        await batcher.close()
        return out

    return asyncio.run(main()), [n for f in fakes for n in f.batches]


def test_concurrent_requests_share_a_batch() -> None:
    texts = [f"question {'x' * k}" for k in range(20)]
    results, batches = run(texts)
    assert batches == [20]                       # one encoder call for twenty requests
    for k, (text, row) in enumerate(zip(texts, results, strict=True)):
        assert row[0] == len(text) and row[1] == float(k % 2 == 1)


def test_batches_are_capped() -> None:
    _, batches = run([f"q{k}" for k in range(10)], max_batch=4)
    assert batches == [4, 4, 2]


def test_requests_of_two_engines_never_share_a_batch() -> None:
    # a hot reload: the old bundle's last requests and the new one's first are batched apart
    results, batches = run([f"q{k}" for k in range(10)], engines=2)
    assert batches == [5, 5] and all(not isinstance(r, Exception) for r in results)


def test_a_full_queue_is_a_503() -> None:
    from vlroute.serve.requests import RequestError

    results, _ = run([f"q{k}" for k in range(6)], max_pending=4)
    refused = [r for r in results if isinstance(r, RequestError)]
    assert len(refused) == 2 and all(r.status == 503 for r in refused)


def test_one_bad_request_fails_alone() -> None:
    results, batches = run(["fine", "boom", "also fine"])
    assert batches[0] == 3 and sorted(batches[1:]) == [1, 1, 1]
    assert results[0][0] == 4 and results[2][0] == 9
    assert isinstance(results[1], ValueError)
    with pytest.raises(ValueError, match="boom"):
        raise results[1]


class CountingText:
    """A text encoder that counts the items it encodes."""

    encoder_id, dim = "count", 3

    def __init__(self) -> None:
        self.items = 0

    def encode_batch(self, items: list[Any]) -> np.ndarray:
        self.items += len(items)
        return np.array([[len(i.text), i.text.count("a"), 1.0] for i in items])


def engine(cache_size: int) -> tuple[Any, CountingText]:
    from vlroute.serve.config import GatewayConfig
    from vlroute.serve.routing import RoutingEngine

    cfg = GatewayConfig.model_validate({
        "backends": [{"name": "a", "base_url": "http://a/v1", "model": "m"}],
        "router": {"cache_size": cache_size}})
    counting = CountingText()
    return RoutingEngine(cfg, encoders={"text": counting}), counting


def test_feature_rows_are_cached_by_content() -> None:
    eng, counting = engine(cache_size=2)
    first = eng.features([Prompt("banana"), Prompt("apple")])
    assert counting.items == 2
    again = eng.features([Prompt("apple"), Prompt("banana"), Prompt("kiwi")])
    assert counting.items == 3                         # only kiwi was encoded
    assert np.allclose(again[0], first[1]) and np.allclose(again[1], first[0])
    # a cache of 2, least recently used out: apple went when kiwi came
    eng.features([Prompt("banana")])
    assert counting.items == 3
    eng.features([Prompt("apple")])
    assert counting.items == 4
    eng.features([Prompt("kiwi", (b"img",))])          # same text, an image: another key
    assert counting.items == 5


def test_the_cache_can_be_turned_off() -> None:
    eng, counting = engine(cache_size=0)
    eng.features([Prompt("banana")])
    eng.features([Prompt("banana")])
    assert counting.items == 2
