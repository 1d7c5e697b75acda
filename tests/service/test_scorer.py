"""The batching scorer's own rules, with a counting stand-in for an onnxruntime graph
(the real graphs are exercised through the API tests)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from model_store.catalogue import Catalogue
from model_store.vocab import IntArray
from service.graphs import MarketModel
from service.metrics import Metrics
from service.scorer import DEFAULT_ROWS, BatchingScorer

pytestmark = pytest.mark.anyio


class CountingGraph:
    """Scores = candidate index + 10 x market; records the shape of every call."""

    def __init__(self, fail: bool = False) -> None:
        self.name = "counting"
        self.provider = "cpu"
        self.calls: list[tuple[int, int]] = []
        self.threads: set[str] = set()
        self.fail = fail

    def score(self, history: IntArray, candidates: IntArray, market: IntArray) -> np.ndarray:
        self.calls.append(candidates.shape)
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("graph failed")
        return (candidates + 10 * market[:, None]).astype(np.float32)


def _market(graph: CountingGraph, index: int) -> MarketModel:
    catalogue = Catalogue(np.array([1]), np.array([1]))
    return MarketModel(
        code=f"m{index}", index=index, graph=graph, own_parameters=True, catalogue=catalogue
    )


async def _scorer(**kwargs: Any) -> BatchingScorer:
    scorer = BatchingScorer(Metrics(), **kwargs)
    await scorer.start()
    return scorer


async def test_waiting_requests_share_a_call_and_get_their_own_scores() -> None:
    graph = CountingGraph()
    scorer = await _scorer(max_rows=10_000, max_wait_s=0.05, enabled=True)
    jobs = [
        scorer.score(np.array([1, 2]), np.arange(1, 4 + i), _market(graph, i % 2)) for i in range(6)
    ]
    results = await asyncio.gather(*jobs)
    await scorer.stop()
    assert graph.calls == [(6, 8)]  # one call, padded to the widest request
    for i, scores in enumerate(results):
        np.testing.assert_array_equal(scores, np.arange(1, 4 + i) + 10 * (i % 2))
    assert graph.threads == {"onnxruntime_0"}  # never on the event loop's thread


async def test_a_batch_never_exceeds_max_rows() -> None:
    graph = CountingGraph()
    scorer = await _scorer(max_rows=100, max_wait_s=0.05, enabled=True)
    jobs = [scorer.score(np.array([1]), np.arange(1, 41), _market(graph, 0)) for _ in range(5)]
    await asyncio.gather(*jobs)
    await scorer.stop()
    assert all(b * c <= 100 for b, c in graph.calls) and sum(b for b, _ in graph.calls) == 5


async def test_the_default_width_is_the_providers() -> None:
    graph = CountingGraph()
    scorer = await _scorer(max_rows=0, max_wait_s=0.05, enabled=True)
    jobs = [scorer.score(np.array([1]), np.arange(1, 201), _market(graph, 0)) for _ in range(12)]
    await asyncio.gather(*jobs)
    await scorer.stop()
    widest = DEFAULT_ROWS["cpu"] // 200
    assert max(b for b, _ in graph.calls) == widest and sum(b for b, _ in graph.calls) == 12


async def test_without_batching_every_request_is_its_own_call() -> None:
    graph = CountingGraph()
    scorer = await _scorer(max_rows=10_000, max_wait_s=0.05, enabled=False)
    await asyncio.gather(
        *(scorer.score(np.array([1]), np.arange(1, 5), _market(graph, 0)) for _ in range(4))
    )
    await scorer.stop()
    assert graph.calls == [(1, 4)] * 4


async def test_a_failed_call_fails_its_requests_and_the_scorer_goes_on() -> None:
    bad, good = CountingGraph(fail=True), CountingGraph()
    scorer = await _scorer(max_rows=10_000, max_wait_s=0.01, enabled=True)
    with pytest.raises(RuntimeError, match="graph failed"):
        await scorer.score(np.array([1]), np.arange(1, 5), _market(bad, 0))
    scores = await scorer.score(np.array([1]), np.arange(1, 5), _market(good, 1))
    await scorer.stop()
    np.testing.assert_array_equal(scores, np.arange(1, 5) + 10)
