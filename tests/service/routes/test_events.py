"""POST /events on fakes: what is refused, and why."""

from __future__ import annotations

import pytest

from tests.service.conftest import JSON, KEY, Api

pytestmark = pytest.mark.anyio


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
