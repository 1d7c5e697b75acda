"""The service against a real redis-server and real exported graphs: the history store's
Redis script and pipelines, the graphs' parity with torch, Redis down, reloads of real
versions, and a real server process's body timeout."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.processes import free_port, running_service
from model_store.catalogue import load_catalogues
from model_store.store import ModelStore
from model_store.vocab import Vocabulary
from service.loading import load_version
from service.metrics import Metrics
from service.scorer import BatchingScorer
from tests.service.conftest import KEY, Api, clone_version, events_of, running, settings
from training.export import PARITY_TOLERANCE, load_run, torch_scores

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(redis_api: Api) -> Api:
    """Here the app runs on a real redis-server and the tiny store's real graphs."""
    return redis_api


def _vocab(store: ModelStore) -> Vocabulary:
    version = store.open()
    return Vocabulary.load(version.file(version.manifest.items))


def _catalogue(store: ModelStore, market: str) -> list[str]:
    version = store.open()
    vocab = _vocab(store)
    catalogue = load_catalogues(version.file(version.manifest.catalogues))[market]
    return [vocab.item(int(i)) for i in catalogue.items]


def _reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):  # socket.timeout if the server holds on
        data += chunk
    return data


async def test_events_are_stored_newest_first_capped_and_deduplicated(
    store: ModelStore, flushed_redis: str
) -> None:
    items = _catalogue(store, "aa")
    async with running(settings(store.root, flushed_redis, history_length=5)) as api:
        events = [
            {"event_id": f"e{i}", "market": "aa", "user_id": "u1", "item_id": item}
            for i, item in enumerate(items[:7])
        ]
        events.append({"market": "aa", "user_id": "u1", "item_id": "never-sold-item"})
        reply = await api.http.post("/events", json={"events": events}, headers=KEY)
        assert reply.json() == {"accepted": 8, "duplicates": 0, "unknown_items": 1}
        again = await api.http.post("/events", json={"events": events[:3]}, headers=KEY)
        assert again.json() == {"accepted": 0, "duplicates": 3, "unknown_items": 0}
        history = await api.app.state.resources.history.history("aa", "u1")
        assert history == [*items[3:7], "never-sold-item"]  # oldest first, 5 kept
        assert await api.app.state.resources.history.history("bb", "u1") == []  # markets apart
        assert api.metric("cmr_events_ingested_total", market="aa") == 8
        assert api.metric("cmr_events_duplicate_total", market="aa") == 3


async def test_events_follow_timestamps_when_all_have_one(api: Api, store: ModelStore) -> None:
    items = _catalogue(store, "bb")
    events = [
        {"market": "bb", "user_id": "u", "item_id": items[0], "timestamp": "2026-01-03T00:00:00Z"},
        {"market": "bb", "user_id": "u", "item_id": items[1], "timestamp": "2026-01-01T00:00:00"},
        {"market": "bb", "user_id": "u", "item_id": items[2], "timestamp": "2026-01-02T00:00:00Z"},
    ]
    assert (await api.http.post("/events", json={"events": events}, headers=KEY)).is_success
    assert await api.app.state.resources.history.history("bb", "u") == [
        items[1],
        items[2],
        items[0],
    ]


async def test_history_reads_that_arrive_together_share_one_pipeline(
    api: Api, store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _catalogue(store, "aa")
    for i in range(4):
        await api.post_history("aa", f"p{i}", items[i : i + 2])
    history = api.app.state.resources.history
    pipelines = 0
    make = history.client.client.pipeline  # the one Redis's own client

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal pipelines
        pipelines += 1
        return make(*args, **kwargs)

    monkeypatch.setattr(history.client.client, "pipeline", counting)
    read = await asyncio.gather(*(history.history("aa", f"p{i}") for i in range(4)))
    assert read == [items[i : i + 2] for i in range(4)]  # each its own, oldest first
    assert pipelines == 1


async def test_deduplication_is_per_market_user_and_event_id(api: Api) -> None:
    first = events_of(("aa", "u1", "e1"), ("aa", "u2", "e1"), ("bb", "u1", "e1"))
    reply = await api.http.post("/events", json=first, headers=KEY)
    assert reply.json()["accepted"] == 3 and reply.json()["duplicates"] == 0
    # A retry after a 503 that stored the events anyway: nothing is stored twice.
    again = await api.http.post("/events", json=first, headers=KEY)
    assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 3
    assert await api.app.state.resources.history.history("aa", "u1") == ["I00001"]
    spec = (await api.http.get("/openapi.json")).json()
    description = spec["paths"]["/events"]["post"]["description"]
    assert "(market, user, event_id)" in description and "same event_ids" in description


async def test_recommendations_rank_as_the_torch_model(
    api: Api, store: ModelStore, tiny_run: Path
) -> None:
    items = _catalogue(store, "bb")
    history = items[5:12]
    await api.post_history("bb", "alice", history)
    candidates = items[:40]
    reply = await api.http.post(
        "/markets/bb/recommend", json={"user_id": "alice", "candidates": candidates, "k": 40}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["fallback"] is None and body["model_version"] == "tiny-1"
    assert body["variant"] == "hybrid"
    served = [(i["item_id"], i["score"]) for i in body["items"]]
    # Seen items are dropped; the rest ranked as the trained torch model ranks them.
    unseen = [c for c in candidates if c not in history]
    vocab = _vocab(store)
    model = load_run(tiny_run, refitted=False).graphs["model.onnx"]
    inputs = {
        "history": vocab.lookup(history)[None, :],
        "candidates": vocab.lookup(unseen)[None, :],
        "market": np.array([1]),
    }
    expected = torch_scores(model, inputs)[0]
    order = np.argsort(-expected, kind="stable")
    assert [item for item, _ in served] == [unseen[i] for i in order]
    np.testing.assert_allclose([s for _, s in served], expected[order], atol=1e-5)


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
    model = load_run(tiny_run, refitted=False).graphs["model.onnx"]
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


async def test_redis_down_is_a_quick_503(store: ModelStore) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with running(settings(store.root, dead, redis_timeout_s=0.5)) as api:
        start = time.perf_counter()
        events = {"events": [{"market": "aa", "user_id": "u", "item_id": "x"}]}
        posted = await api.http.post("/events", json=events, headers=KEY)
        ranked = await api.http.post("/markets/aa/recommend", json={"user_id": "u"})
        assert posted.status_code == 503 and ranked.status_code == 503
        assert "unavailable" in ranked.json()["error"]
        assert time.perf_counter() - start < 5
        assert (await api.http.get("/readyz")).status_code == 503
        assert api.metric("cmr_redis_errors_total") >= 2


async def test_reload_swaps_versions_and_refuses_broken_ones(
    store: ModelStore, flushed_redis: str
) -> None:
    async with running(settings(store.root, flushed_redis)) as api:
        clone_version(store, "tiny-1", "tiny-2")
        store.promote("tiny-2")
        reply = await api.http.post("/admin/reload", headers=KEY)
        assert reply.json()["serving"] == "tiny-2"
        ranked = await api.http.post("/markets/aa/recommend", json={"user_id": "x"})
        assert ranked.json()["model_version"] == "tiny-2"
        # A version whose files hash right but whose graph cannot be loaded.
        broken = clone_version(store, "tiny-1", "tiny-3")
        graph = broken.file(broken.manifest.graphs["aa"])
        graph.write_bytes(b"not an onnx graph")
        clone_version(store, "tiny-3", "tiny-4")  # re-hashed: passes verification
        store.promote("tiny-4")
        refused = await api.http.post("/admin/reload", headers=KEY)
        assert refused.status_code == 409 and "refused" in refused.json()["error"]
        ranked = await api.http.post("/markets/aa/recommend", json={"user_id": "x"})
        assert ranked.json()["model_version"] == "tiny-2"
        assert api.metric("cmr_model_reloads_total", result="refused") == 1
        assert (await api.http.post("/admin/reload")).status_code == 401


def test_a_body_that_stops_arriving_is_a_408_and_the_connection_closes(
    store: ModelStore, flushed_redis: str
) -> None:
    timeout_s = 0.5
    env = {"CMR_BODY_TIMEOUT_S": str(timeout_s)}
    with running_service(store.root, flushed_redis, free_port(), env=env) as service:
        port = int(service.url.rsplit(":", 1)[1])
        for path in ["/events", "/markets/aa/recommend"]:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: test\r\nX-API-Key: bench\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            )
            with socket.create_connection(("127.0.0.1", port), timeout=timeout_s + 10) as sock:
                sock.sendall(head.encode() + b'{"events":')  # 10 of the 1,000 bytes
                started = time.monotonic()
                reply = _reply(sock)
                waited = time.monotonic() - started
            status, _, rest = reply.partition(b"\r\n")
            headers, _, body = rest.partition(b"\r\n\r\n")
            assert status == b"HTTP/1.1 408 Request Timeout", reply
            assert b"connection: close" in headers.lower()
            assert json.loads(body) == {"error": "request body incomplete after 0.5 s"}
            assert waited < timeout_s + 5  # the timeout, with a generous margin
        # The service goes on serving.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            assert _reply(sock).startswith(b"HTTP/1.1 200")
