"""POST /markets/{market}/recommend on fakes: ranking, fallbacks, refusals, batching."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from service.scorer import BatchingScorer
from tests.service.conftest import JSON, KEY, Api

pytestmark = pytest.mark.anyio


async def test_catalogue_top_k_and_exclude_seen(api: Api) -> None:
    items = api.catalogue("aa")
    await api.post_history("aa", "bob", items[:3])
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


async def test_a_user_without_history_gets_market_popularity(api: Api) -> None:
    reply = await api.http.post("/markets/cc/recommend", json={"user_id": "new", "k": 5})
    body = reply.json()
    assert body["fallback"] == "popularity"
    assert [i["item_id"] for i in body["items"]] == api.catalogue("cc")[:5]


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
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.post_history("aa", "u", api.catalogue("aa")[:3])

    async def broken(*args: object) -> None:
        raise RuntimeError("onnxruntime failed")

    monkeypatch.setattr(BatchingScorer, "score", broken)
    reply = await api.http.post("/markets/aa/recommend", json={"user_id": "u"})
    assert reply.status_code == 500 and reply.json() == {"error": "internal error"}


async def test_non_finite_scores_are_a_logged_json_500(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    items = api.catalogue("aa")
    events = [{"market": "aa", "user_id": "u", "item_id": i} for i in items[:3]]
    assert (await api.http.post("/events", json={"events": events}, headers=KEY)).is_success

    async def poisoned(self: object, seen: object, candidates: Any, market: object) -> Any:
        scores = np.linspace(1, 0, len(candidates), dtype=np.float32)
        scores[len(scores) // 2] = np.nan  # ranked in the middle; k = 1 would hide it
        return scores

    monkeypatch.setattr(BatchingScorer, "score", poisoned)
    with caplog.at_level(logging.ERROR, logger="service.routes.recommend"):
        reply = await api.http.post("/markets/aa/recommend", json={"user_id": "u", "k": 1})
    assert reply.status_code == 500
    assert reply.json() == {"error": "model produced non-finite scores"}
    assert "1 of" in caplog.text and "not finite" in caplog.text


async def test_concurrent_requests_share_one_call_and_rank_as_alone(api: Api) -> None:
    items = api.catalogue("aa")
    users = [f"user{i}" for i in range(8)]
    for i, user in enumerate(users):
        await api.post_history("aa", user, items[i : 2 * i + 3])
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
