"""Onboarding a market, against a real redis-server and real exported graphs: a market
of CMR_NEW_MARKETS takes events and is ranked by pooled popularity while the served
version does not know it; the poller loads the version that does, and the model
scores the same request from then on.

The version without the market is the tiny store's own, its manifest cut to aa and bb
(its graph keeps cc's rows, but the service only serves the markets a manifest names);
the version that knows cc is the tiny store's, as `cmr onboard` would publish one."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from model_store.catalogue import Catalogue, load_catalogues
from model_store.store import ModelStore, Version
from model_store.vocab import Vocabulary
from tests.service.conftest import KEY, Api, clone_version, log_entries, running, settings
from training.export import PARITY_TOLERANCE, load_run, torch_scores
from training.store_model import load_stored_hybrid

pytestmark = pytest.mark.anyio


def _without_cc(folder: Path) -> None:
    path = folder / "catalogues.json"
    catalogues = json.loads(path.read_text())
    del catalogues["cc"]
    path.write_text(json.dumps(catalogues))


async def _serving(api: Api, version: str, *, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while (await api.http.get("/readyz")).json()["model"] != version:
        assert time.monotonic() < deadline, f"the poller did not load {version}"
        await asyncio.sleep(0.05)


async def test_a_new_market_is_served_by_popularity_until_its_version_is_loaded(
    store: ModelStore, flushed_redis: str, tiny_run: Path
) -> None:
    markets = {"aa": 0, "bb": 1}
    clone_version(store, "tiny-1", "tiny-0", _without_cc, markets=markets,
                  graphs=dict.fromkeys(markets, "model.onnx"))  # fmt: skip
    store.promote("tiny-0")
    opened = store.open("tiny-1")
    catalogues = load_catalogues(opened.file(opened.manifest.catalogues))
    vocab = Vocabulary.load(opened.file(opened.manifest.items))
    cc_items = [vocab.item(i) for i in catalogues["cc"].items.tolist()]
    history, candidates = cc_items[3:8], cc_items[:3] + cc_items[8:40]
    config = settings(store.root, flushed_redis, new_markets="cc", reload_interval_s=0.05)
    async with running(config) as api:
        assert (await api.http.get("/readyz")).json()["model"] == "tiny-0"
        # Events for cc are stored and logged; an item no version knows is counted.
        events = [{"market": "cc", "user_id": "shop", "item_id": i} for i in history]
        events.append({"market": "cc", "user_id": "shop", "item_id": "only-in-cc"})
        reply = await api.http.post("/events", json={"events": events}, headers=KEY)
        assert reply.json() == {"accepted": 6, "duplicates": 0, "unknown_items": 1}
        logged = log_entries(flushed_redis)["cmr:{log}:cc"]
        assert [(e.user, e.item) for e in logged] == [("shop", e["item_id"]) for e in events]
        zz = {"events": [{"market": "zz", "user_id": "shop", "item_id": history[0]}]}
        assert (await api.http.post("/events", json=zz, headers=KEY)).status_code == 422

        # Popularity pooled over aa and bb, the markets tiny-0 knows; history excluded.
        request = {"user_id": "shop", "candidates": candidates + history, "k": 10}
        before = (await api.http.post("/markets/cc/recommend", json=request)).json()
        assert before["fallback"] == "popularity" and before["model_version"] == "tiny-0"
        pooled = Catalogue.pooled([catalogues["aa"], catalogues["bb"]])
        count = dict(zip(pooled.items.tolist(), pooled.counts.tolist(), strict=True))
        by_count = sorted(candidates, key=lambda i: -count.get(vocab.index(i), 0))  # stable
        assert [i["item_id"] for i in before["items"]] == by_count[:10]
        assert before["items"][0]["score"] == pytest.approx(
            count[vocab.index(by_count[0])] / pooled.counts.sum()
        )
        listed = {m["market"]: m for m in (await api.http.get("/markets")).json()["markets"]}
        assert listed["cc"]["fallback"] == "popularity" and listed["cc"]["graph"] is None

        # The version that knows cc is promoted; the poller swaps it in.
        store.promote("tiny-1")
        await _serving(api, "tiny-1")
        after = (await api.http.post("/markets/cc/recommend", json=request)).json()
        assert after["fallback"] is None and after["model_version"] == "tiny-1"
        model = load_run(tiny_run, refitted=False).graphs["model.onnx"]
        inputs = {
            "history": vocab.lookup(history)[None, :],
            "candidates": vocab.lookup(candidates)[None, :],
            "market": np.array([2]),  # cc's own parameters
        }
        expected = torch_scores(model, inputs)[0]
        order = np.argsort(-expected, kind="stable")[:10]
        assert [i["item_id"] for i in after["items"]] == [candidates[i] for i in order]
        served = np.array([i["score"] for i in after["items"]])
        assert np.abs(served - expected[order]).max() <= PARITY_TOLERANCE
        listed = {m["market"]: m for m in (await api.http.get("/markets")).json()["markets"]}
        assert listed["cc"]["fallback"] is None and listed["cc"]["graph"] == "model.onnx"
        assert api.metric("cmr_recommend_fallbacks_total", market="cc") == 1
        assert api.metric("cmr_candidates_scored_total", market="cc") == len(candidates)


async def test_a_market_onboarded_by_cmr_onboard_is_served_after_the_reload(
    tiny_onboarded: Version, flushed_redis: str, tmp_path: Path
) -> None:
    """The same path with the version `cmr onboard` published (tests/conftest.py): dd,
    unknown to tiny-1, is on popularity until tiny-dd is promoted and loaded, then
    scored by tiny-dd's graph with dd's own parameters (row 3)."""
    root = tmp_path / "store"
    shutil.copytree(tiny_onboarded.path.parents[1], root)
    store = ModelStore(root)
    assert store.current() == "tiny-1"
    vocab = Vocabulary.load(tiny_onboarded.file("items.json"))
    dd = load_catalogues(tiny_onboarded.file("catalogues.json"))["dd"]
    items = [vocab.item(i) for i in dd.items.tolist()]
    new = [i for i in items if i.startswith("new-")]
    history, candidates = items[5:9], items[:5] + items[9:30] + new
    config = settings(root, flushed_redis, new_markets="dd", reload_interval_s=0.05)
    async with running(config) as api:
        events = [{"market": "dd", "user_id": "u", "item_id": i} for i in history]
        assert (await api.http.post("/events", json={"events": events}, headers=KEY)).is_success
        request = {"user_id": "u", "candidates": candidates, "k": 10}
        before = (await api.http.post("/markets/dd/recommend", json=request)).json()
        assert before["fallback"] == "popularity" and before["model_version"] == "tiny-1"
        # tiny-1 has never seen the new items: they are unknown candidates, not ranked.
        assert not {i["item_id"] for i in before["items"]} & set(new)

        store.promote("tiny-dd")
        await _serving(api, "tiny-dd")
        after = (await api.http.post("/markets/dd/recommend", json=request)).json()
        assert after["fallback"] is None and after["model_version"] == "tiny-dd"
        model = load_stored_hybrid(root, "tiny-dd").model
        inputs = {
            "history": vocab.lookup(history)[None, :],
            "candidates": vocab.lookup(candidates)[None, :],
            "market": np.array([3]),  # dd's own row and block
        }
        expected = torch_scores(model, inputs)[0]
        order = np.argsort(-expected, kind="stable")[:10]
        assert [i["item_id"] for i in after["items"]] == [candidates[i] for i in order]
        served = np.array([i["score"] for i in after["items"]])
        assert np.abs(served - expected[order]).max() <= PARITY_TOLERANCE
