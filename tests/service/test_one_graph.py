"""One graph for every market: requests of three markets, waiting together, are scored in
one onnxruntime call of the published graph, each row as its own market's torch model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.store import ModelStore
from service.loading import load_version
from service.metrics import Metrics
from service.scorer import BatchingScorer
from training.export import PARITY_TOLERANCE, load_run, torch_scores

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_three_markets_share_one_onnxruntime_call(
    store: ModelStore, tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_version(store, None, provider="cpu", intra_threads=1, inter_threads=1)
    graphs = {id(m.graph) for m in loaded.markets.values()}
    assert len(graphs) == 1 and all(m.own_parameters for m in loaded.markets.values())
    graph = loaded.markets["aa"].graph
    calls: list[dict[str, np.ndarray]] = []
    run = graph.session.run

    def counting_run(outputs: Any, feed: dict[str, np.ndarray]) -> Any:
        calls.append(feed)
        return run(outputs, feed)

    monkeypatch.setattr(graph.session, "run", counting_run)
    requests = []  # (market, history, candidates): lengths differ, so rows are padded
    for n, (_, market) in enumerate(sorted(loaded.markets.items())):
        items = market.catalogue.items
        requests.append((market, items[n : n + 3 + 2 * n], items[10 : 30 + 7 * n]))
    scorer = BatchingScorer(Metrics(), max_rows=10_000, max_wait_s=0.2, enabled=True)
    await scorer.start()
    results = await asyncio.gather(*(scorer.score(hist, cands, m) for m, hist, cands in requests))
    await scorer.stop()
    assert len(calls) == 1  # the three markets in one call
    assert sorted(calls[0]["market"].tolist()) == [0, 1, 2]
    model = load_run(tiny_run).graphs["model.onnx"]
    for (market, history, candidates), scores in zip(requests, results, strict=True):
        inputs = {
            "history": history[None, :],
            "candidates": candidates[None, :],
            "market": np.array([market.index]),
        }
        expected = torch_scores(model, inputs)[0]  # this market's row of the torch model
        assert np.abs(scores - expected).max() <= PARITY_TOLERANCE, market.code
    # Each row scores with its market's parameters: the same user elsewhere scores otherwise.
    market, history, candidates = requests[0]
    other = {
        "history": history[None, :],
        "candidates": candidates[None, :],
        "market": np.array([1]),
    }
    assert np.abs(torch_scores(model, other)[0] - results[0]).max() > 1e-3
