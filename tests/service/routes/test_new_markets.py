"""New markets (CMR_NEW_MARKETS) on fakes: their events are stored, their requests
ranked by popularity pooled over the served version's markets until a version that
knows them is loaded, then scored by the model; any other unknown market is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.catalogue import Catalogue
from tests.service.conftest import KEY, RECOMMEND, Api, running, settings
from tests.service.fakes import EmbeddingGraph, FakeSource, MemoryHistory, fake_version

pytestmark = pytest.mark.anyio

# aa and bb sell different items, so pooled popularity is neither market's own.
CATALOGUES = {
    "aa": Catalogue(np.array([1, 2, 3]), np.array([6, 3, 2])),
    "bb": Catalogue(np.array([3, 4]), np.array([5, 4])),
}
POOLED = {"I00003": 7 / 20, "I00001": 6 / 20, "I00004": 4 / 20, "I00002": 3 / 20}
GRAPH = EmbeddingGraph(120)
BEFORE = fake_version("tiny-1", markets=("aa", "bb"), graph=GRAPH, catalogues=CATALOGUES)
# The version `cmr onboard` would publish: dd has its own index, catalogue and rows.
DD = Catalogue(np.array([5, 2, 4]), np.array([9, 2, 1]))
AFTER = fake_version(
    "tiny-2", markets=("aa", "bb", "dd"), graph=GRAPH, catalogues=CATALOGUES | {"dd": DD}
)


@asynccontextmanager
async def serving(tmp_path: Path, source: FakeSource) -> AsyncIterator[Api]:
    """The app on fakes, with dd and ee as new markets (read as CMR_NEW_MARKETS is)."""
    config = settings(tmp_path, "redis://127.0.0.1:1/0", new_markets="dd, ee")
    async with running(config, history=MemoryHistory(), source=source) as api:
        yield api


async def _recommend(api: Api, market: str, **body: Any) -> dict[str, Any]:
    reply = await api.http.post(RECOMMEND.format(market=market), json=body)
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def _ranked(answer: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in answer["items"]]


def _scores(answer: dict[str, Any]) -> dict[str, float]:
    return {i["item_id"]: i["score"] for i in answer["items"]}


async def test_events_of_a_new_market_are_stored_and_other_markets_still_refused(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, FakeSource(BEFORE)) as api:
        events = [
            {"market": "dd", "user_id": "shop", "item_id": "I00003", "event_id": "e1"},
            {"market": "dd", "user_id": "shop", "item_id": "sold-only-in-dd"},
        ]
        reply = await api.http.post("/events", json={"events": events}, headers=KEY)
        assert reply.json() == {"accepted": 2, "duplicates": 0, "unknown_items": 1}
        again = await api.http.post("/events", json={"events": events[:1]}, headers=KEY)
        assert again.json() == {"accepted": 0, "duplicates": 1, "unknown_items": 0}
        history = api.app.state.resources.history
        assert await history.history("dd", "shop") == ["I00003", "sold-only-in-dd"]
        assert api.metric("cmr_events_ingested_total", market="dd") == 2
        assert api.metric("cmr_events_unknown_items_total", market="dd") == 1
        # A market neither served nor new: the whole request is refused, nothing stored.
        mixed = [{"market": "dd", "user_id": "other", "item_id": "I00001"},
                 {"market": "zz", "user_id": "other", "item_id": "I00001"}]  # fmt: skip
        refused = await api.http.post("/events", json={"events": mixed}, headers=KEY)
        assert refused.status_code == 422
        assert refused.json()["error"] == "unknown market(s): zz"
        assert await history.history("dd", "other") == []


async def test_a_new_market_ranks_by_popularity_pooled_over_every_market(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeSource(BEFORE)) as api:
        fresh = await _recommend(api, "dd", user_id="new", k=10)
        assert fresh["fallback"] == "popularity" and fresh["model_version"] == "tiny-1"
        assert fresh["market"] == "dd" and fresh["variant"] == "hybrid"
        assert _ranked(fresh) == list(POOLED)
        assert _scores(fresh) == pytest.approx(POOLED)
        assert _ranked(await _recommend(api, "dd", user_id="new", k=2)) == ["I00003", "I00001"]
        # The user's stored history is excluded, known items only; unknown ones change nothing.
        await api.post_history("dd", "shop", ["I00001", "sold-only-in-dd"])
        seen = await _recommend(api, "dd", user_id="shop")
        assert seen["fallback"] == "popularity"  # no model for dd: history or not
        assert _ranked(seen) == ["I00003", "I00004", "I00002"]
        kept = await _recommend(api, "dd", user_id="shop", exclude_seen=False)
        assert _ranked(kept) == list(POOLED)
        # The request's candidates: known ones, ranked; an item no market sold scores 0.
        asked = ["I00002", "I00050", "I00004", "I00001", "unknown-id", "I00002"]
        ranked = await _recommend(api, "dd", user_id="shop", candidates=asked)
        assert _ranked(ranked) == ["I00004", "I00002", "I00050"]
        assert _scores(ranked) == pytest.approx({"I00004": 0.2, "I00002": 0.15, "I00050": 0.0})
        # ee is new too; zz is neither served nor new.
        assert _ranked(await _recommend(api, "ee", user_id="new")) == list(POOLED)
        unknown = await api.http.post(RECOMMEND.format(market="zz"), json={"user_id": "new"})
        assert unknown.status_code == 404 and "zz" in unknown.json()["error"]
        # Counted per market, under the market's own label.
        assert api.metric("cmr_recommend_fallbacks_total", market="dd") == 5
        assert api.metric("cmr_recommend_fallbacks_total", market="ee") == 1
        path = {"route": RECOMMEND, "market": "dd", "status": "200"}
        assert api.metric("cmr_requests_total", **path) == 5
        zz = {"route": RECOMMEND, "market": "unknown", "status": "404"}
        assert api.metric("cmr_requests_total", **zz) == 1


async def test_get_markets_lists_the_new_markets_as_on_popularity(tmp_path: Path) -> None:
    source = FakeSource(BEFORE, AFTER)
    async with serving(tmp_path, source) as api:
        before = {m["market"]: m for m in (await api.http.get("/markets")).json()["markets"]}
        assert list(before) == ["aa", "bb", "dd", "ee"]
        assert before["aa"] == {"market": "aa", "graph": "model.onnx", "own_parameters": True,
                                "catalogue_size": 3, "fallback": None}  # fmt: skip
        assert before["dd"] == {"market": "dd", "graph": None, "own_parameters": False,
                                "catalogue_size": 4, "fallback": "popularity"}  # fmt: skip
        source.current_name = "tiny-2"
        assert (await api.http.post("/admin/reload", headers=KEY)).json()["serving"] == "tiny-2"
        after = {m["market"]: m for m in (await api.http.get("/markets")).json()["markets"]}
        assert list(after) == ["aa", "bb", "dd", "ee"]
        assert after["dd"]["graph"] == "model.onnx" and after["dd"]["fallback"] is None
        assert after["dd"]["catalogue_size"] == 3 and after["ee"]["fallback"] == "popularity"


async def test_once_a_version_knows_the_market_the_model_scores_it(tmp_path: Path) -> None:
    source = FakeSource(BEFORE, AFTER)
    async with serving(tmp_path, source) as api:
        await api.post_history("dd", "shop", ["I00007", "I00009"])
        asked = ["I00001", "I00002", "I00004", "I00005", "I00030"]
        before = await _recommend(api, "dd", user_id="shop", candidates=asked)
        assert before["fallback"] == "popularity" and before["model_version"] == "tiny-1"
        source.current_name = "tiny-2"
        assert (await api.http.post("/admin/reload", headers=KEY)).status_code == 200
        scored = await _recommend(api, "dd", user_id="shop", candidates=asked, k=5)
        assert scored["fallback"] is None and scored["model_version"] == "tiny-2"
        # The graph's scores for this history, these candidates and dd's index (2).
        expected = GRAPH.score(np.array([[7, 9]]), np.array([[1, 2, 4, 5, 30]]), np.array([2]))[0]
        order = np.argsort(-expected, kind="stable")
        assert _ranked(scored) == [asked[i] for i in order]
        np.testing.assert_allclose([i["score"] for i in scored["items"]], expected[order])
        # A user without history now gets dd's own popularity, not the pooled one.
        fresh = await _recommend(api, "dd", user_id="new")
        assert fresh["fallback"] == "popularity"
        assert _ranked(fresh) == ["I00005", "I00002", "I00004"]
        assert api.metric("cmr_candidates_scored_total", market="dd") == 5
