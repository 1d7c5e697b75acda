"""The service against a real redis-server and real exported graphs."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from benchmarks.processes import free_port
from model_store.catalogue import load_catalogues
from model_store.store import ModelStore
from model_store.vocab import Vocabulary
from service.batching import BatchingScorer
from service.guard import RequestGuard
from service.settings import Settings
from tests.service.conftest import KEY, Api, clone_version, running, settings
from training.export import load_run, torch_scores

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}  # the JSON routes refuse other bodies (415)


def _vocab(store: ModelStore) -> Vocabulary:
    version = store.open()
    return Vocabulary.load(version.file(version.manifest.items))


def _catalogue(store: ModelStore, market: str) -> list[str]:
    version = store.open()
    vocab = _vocab(store)
    catalogue = load_catalogues(version.file(version.manifest.catalogues))[market]
    return [vocab.item(int(i)) for i in catalogue.items]


async def _post_history(api: Api, market: str, user: str, items: list[str]) -> None:
    events = [{"market": market, "user_id": user, "item_id": i} for i in items]
    reply = await api.http.post("/events", json={"events": events}, headers=KEY)
    assert reply.status_code == 200, reply.text


async def test_events_are_stored_newest_first_capped_and_deduplicated(
    store: ModelStore, flushed_redis: str
) -> None:
    items = _catalogue(store, "aa")
    async with running(settings(store, flushed_redis, history_length=5)) as api:
        events = [
            {"event_id": f"e{i}", "market": "aa", "user_id": "u1", "item_id": item}
            for i, item in enumerate(items[:7])
        ]
        events.append({"market": "aa", "user_id": "u1", "item_id": "never-sold-item"})
        reply = await api.http.post("/events", json={"events": events}, headers=KEY)
        assert reply.json() == {"accepted": 8, "duplicates": 0, "unknown_items": 1}
        again = await api.http.post("/events", json={"events": events[:3]}, headers=KEY)
        assert again.json() == {"accepted": 0, "duplicates": 3, "unknown_items": 0}
        history = await api.app.state.history.history("aa", "u1")
        assert history == [*items[3:7], "never-sold-item"]  # oldest first, 5 kept
        assert await api.app.state.history.history("bb", "u1") == []  # markets apart
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
    assert await api.app.state.history.history("bb", "u") == [items[1], items[2], items[0]]


async def test_history_reads_that_arrive_together_share_one_pipeline(
    api: Api, store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = _catalogue(store, "aa")
    for i in range(4):
        await _post_history(api, "aa", f"p{i}", items[i : i + 2])
    history = api.app.state.history
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


async def test_bad_events_are_refused_with_reasons(api: Api) -> None:
    unknown = {"events": [{"market": "zz", "user_id": "u", "item_id": "x"}]}
    reply = await api.http.post("/events", json=unknown, headers=KEY)
    assert reply.status_code == 422 and "zz" in reply.json()["error"]
    for body in [
        {"events": []},
        {"events": [{"market": "aa", "user_id": "", "item_id": "x"}]},
        {"events": [{"market": "aa", "user_id": "u", "item_id": "x", "timestamp": "soon"}]},
        {"events": [{"market": "aa", "user_id": "u", "item_id": "x"}] * 1001},
    ]:
        reply = await api.http.post("/events", json=body, headers=KEY)
        assert reply.status_code == 422 and reply.json()["error"] == "invalid request"
    reply = await api.http.post("/events", content=b"{", headers=KEY | JSON)
    assert reply.status_code == 422
    assert (await api.http.post("/events", json=unknown)).status_code == 401
    wrong = {"X-API-Key": "test-kez"}
    assert (await api.http.post("/events", json=unknown, headers=wrong)).status_code == 401


async def test_oversized_bodies_are_refused(store: ModelStore, flushed_redis: str) -> None:
    async with running(settings(store, flushed_redis, max_body_bytes=2048)) as api:
        events = [{"market": "aa", "user_id": "u" * 200, "item_id": "x"}] * 20
        reply = await api.http.post("/events", json={"events": events}, headers=KEY)
        assert reply.status_code == 413 and "2048" in reply.json()["error"]
        body = {"user_id": "u", "candidates": ["x" * 100] * 30}
        reply = await api.http.post("/markets/aa/recommend", json=body)
        assert reply.status_code == 413 and "2048" in reply.json()["error"]

        async def streamed() -> AsyncIterator[bytes]:  # no content-length: counted as read
            yield b'{"user_id": "u", "candidates": ['
            for _ in range(30):
                yield b'"' + b"x" * 100 + b'",'
            yield b'"x"]}'

        reply = await api.http.post("/markets/aa/recommend", content=streamed(), headers=JSON)
        assert reply.status_code == 413 and "2048" in reply.json()["error"]


async def test_a_content_length_that_is_not_a_number_is_a_400() -> None:
    async def never_called(scope: object, receive: object, send: object) -> None:
        raise AssertionError("the request went past the limit check")

    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/events",
             "headers": [(b"content-length", b"12abc")]}  # fmt: skip
    await RequestGuard(never_called, limit=1024)(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b"not a number" in sent[1]["body"]  # type: ignore[operator]


async def test_recommendations_rank_as_the_torch_model(
    api: Api, store: ModelStore, tiny_run: Path
) -> None:
    items = _catalogue(store, "bb")
    history = items[5:12]
    await _post_history(api, "bb", "alice", history)
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
    model = load_run(tiny_run).graphs["model.onnx"]
    inputs = {
        "history": vocab.lookup(history)[None, :],
        "candidates": vocab.lookup(unseen)[None, :],
        "market": np.array([1]),
    }
    expected = torch_scores(model, inputs)[0]
    order = np.argsort(-expected, kind="stable")
    assert [item for item, _ in served] == [unseen[i] for i in order]
    np.testing.assert_allclose([s for _, s in served], expected[order], atol=1e-5)


async def test_catalogue_top_k_and_exclude_seen(api: Api, store: ModelStore) -> None:
    items = _catalogue(store, "aa")
    await _post_history(api, "aa", "bob", items[:3])
    reply = await api.http.post("/markets/aa/recommend", json={"user_id": "bob", "k": 25})
    ranked = [i["item_id"] for i in reply.json()["items"]]
    assert len(ranked) == 25 and not set(ranked) & set(items[:3])
    scores = [i["score"] for i in reply.json()["items"]]
    assert scores == sorted(scores, reverse=True)
    keep = await api.http.post(
        "/markets/aa/recommend",
        json={"user_id": "bob", "k": 1000, "exclude_seen": False},
    )
    assert set(items[:3]) <= {i["item_id"] for i in keep.json()["items"]}
    assert len(keep.json()["items"]) == len(items)


async def test_a_user_without_history_gets_market_popularity(api: Api, store: ModelStore) -> None:
    reply = await api.http.post("/markets/cc/recommend", json={"user_id": "new", "k": 5})
    body = reply.json()
    assert body["fallback"] == "popularity"
    assert [i["item_id"] for i in body["items"]] == _catalogue(store, "cc")[:5]


async def test_recommend_refuses_bad_requests(api: Api) -> None:
    reply = await api.http.post("/markets/zz/recommend", json={"user_id": "u"})
    assert reply.status_code == 404 and "zz" in reply.json()["error"]
    for body in [{"user_id": "u", "k": 0}, {"user_id": "u", "k": 1001}, {"k": 3},
                 {"user_id": "u", "candidates": []},
                 {"user_id": "u", "candidates": ["x"] * 5001}]:  # fmt: skip
        reply = await api.http.post("/markets/aa/recommend", json=body)
        assert reply.status_code == 422, body
        assert reply.json()["error"] == "invalid request"
    reply = await api.http.post("/markets/aa/recommend", json={"user_id": "u", "k": 0})
    assert [d["loc"] for d in reply.json()["detail"]] == [["body", "k"]]
    reply = await api.http.post("/markets/aa/recommend", content=b'{"user_id": ', headers=JSON)
    assert reply.status_code == 422 and reply.json()["detail"][0]["type"] == "json_invalid"
    reply = await api.http.get("/markets/aa/recommend")
    assert reply.status_code == 405 and reply.headers["allow"] == "POST"


async def test_a_failed_scoring_call_is_a_json_500(
    api: Api, store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _post_history(api, "aa", "u", _catalogue(store, "aa")[:3])

    async def broken(*args: object) -> None:
        raise RuntimeError("onnxruntime failed")

    monkeypatch.setattr(BatchingScorer, "score", broken)
    reply = await api.http.post("/markets/aa/recommend", json={"user_id": "u"})
    assert reply.status_code == 500 and reply.json() == {"error": "internal error"}


async def test_the_recommend_route_is_documented(api: Api) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    post = spec["paths"]["/markets/{market}/recommend"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/RecommendIn"}
    assert {"RecommendIn", "RecommendOut", "ScoredItem", "ErrorOut"} <= set(
        spec["components"]["schemas"]
    )


async def test_concurrent_requests_share_one_call_and_rank_as_alone(
    api: Api, store: ModelStore
) -> None:
    items = _catalogue(store, "aa")
    users = [f"user{i}" for i in range(8)]
    for i, user in enumerate(users):
        await _post_history(api, "aa", user, items[i : 2 * i + 3])
    bodies = [
        {"user_id": u, "candidates": items[10 : 40 + 5 * i], "k": 20} for i, u in enumerate(users)
    ]
    alone = []
    for body in bodies:  # one at a time: each is its own call
        alone.append((await api.http.post("/markets/aa/recommend", json=body)).json())
    calls = api.metric("cmr_batch_requests_count")
    together = await asyncio.gather(
        *(api.http.post("/markets/aa/recommend", json=body) for body in bodies)
    )
    assert api.metric("cmr_batch_requests_count") - calls < len(bodies)  # calls were shared
    assert api.metric("cmr_batch_requests_bucket", le="1.0") < api.metric(
        "cmr_batch_requests_count"
    )
    for one, shared in zip(alone, together, strict=True):
        got = shared.json()["items"]
        assert [i["item_id"] for i in got] == [i["item_id"] for i in one["items"]]
        np.testing.assert_allclose(
            [i["score"] for i in got], [i["score"] for i in one["items"]], atol=1e-5
        )


async def test_markets_health_and_metrics(api: Api, store: ModelStore) -> None:
    markets = (await api.http.get("/markets")).json()["markets"]
    # One graph for every market, each with parameters of its own.
    assert {m["market"]: (m["graph"], m["own_parameters"]) for m in markets} == {
        "aa": ("model.onnx", True),
        "bb": ("model.onnx", True),
        "cc": ("model.onnx", True),
    }
    assert all(m["catalogue_size"] == len(_catalogue(store, m["market"])) for m in markets)
    assert (await api.http.get("/livez")).json() == {"status": "alive"}
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() | {} == {
        "status": "ready",
        "model": "tiny-1",
        "variant": "hybrid",
        "provider": "cpu",
        "redis": "ok",
    }
    await _post_history(api, "aa", "secret-user-id", _catalogue(store, "aa")[:2])
    await api.http.post("/markets/aa/recommend", json={"user_id": "secret-user-id"})
    text = (await api.http.get("/metrics")).text
    for name in [
        "cmr_requests_total",
        "cmr_request_seconds_bucket",
        "cmr_batch_requests_bucket",
        "cmr_batch_candidate_rows_bucket",
        "cmr_queue_wait_seconds_bucket",
        "cmr_inference_seconds_bucket",
        "cmr_candidates_scored_total",
        "cmr_events_ingested_total",
        "cmr_redis_errors_total",
        "cmr_model_reloads_total",
        'cmr_model_info{provider="cpu",variant="hybrid",version="tiny-1"} 1.0',
    ]:
        assert name in text, name
    assert "secret-user-id" not in text
    assert 'route="/markets/{market}/recommend"' in text


async def test_redis_down_is_a_quick_503(store: ModelStore) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with running(settings(store, dead, redis_timeout_s=0.5)) as api:
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
    async with running(settings(store, flushed_redis)) as api:
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


async def test_polling_notices_a_new_current(store: ModelStore, flushed_redis: str) -> None:
    async with running(settings(store, flushed_redis, reload_interval_s=0.1)) as api:
        clone_version(store, "tiny-1", "tiny-2")
        store.promote("tiny-2")
        for _ in range(100):
            if api.app.state.reloader.loaded.version == "tiny-2":
                break
            await asyncio.sleep(0.05)
        assert api.app.state.reloader.loaded.version == "tiny-2"


def test_settings_need_an_api_key_outside_development(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CMR_API_KEY"):
        Settings(store=tmp_path)
    assert Settings(store=tmp_path, development=True).api_key is None


def test_onnxruntime_threads_split_the_cores_among_scoring_workers(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    one = Settings(store=tmp_path, development=True, scoring_workers=1)
    assert one.threads_per_call() == cores
    many = Settings(store=tmp_path, development=True, scoring_workers=cores + 1)
    assert many.threads_per_call() == 1  # never 0, which would mean "every core" to onnxruntime
    pinned = Settings(store=tmp_path, development=True, scoring_workers=2, intra_threads=3)
    assert pinned.threads_per_call() == 3
