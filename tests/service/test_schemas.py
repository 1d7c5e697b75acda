"""Request bodies take only their documented JSON types."""

from __future__ import annotations

import pytest

from tests.service.conftest import KEY, Api

pytestmark = pytest.mark.anyio


async def test_request_bodies_take_only_their_documented_json_types(api: Api) -> None:
    wrong = [{"k": "3"}, {"exclude_seen": 0}, {"user_id": 7}, {"k": 2.5}, {"k": True}]
    for body in [{"user_id": "u"} | w for w in wrong]:
        reply = await api.http.post("/markets/aa/recommend", json=body)
        assert reply.status_code == 422, body
    reply = await api.http.post("/markets/aa/recommend", json={"user_id": "u", "k": 3.0})
    assert len(reply.json()["items"]) == 3  # JSON Schema counts 3.0 as an integer
    event = {"market": "aa", "user_id": "u", "item_id": "x"}
    for when in [0, 1.7e9, "1700000000", "2026-01-31", "soon", "2026-02-30T00:00:00Z"]:
        body = {"events": [event | {"timestamp": when}]}
        reply = await api.http.post("/events", json=body, headers=KEY)
        assert reply.status_code == 422, when
    for when in ["2026-01-31T12:00:00Z", "2026-01-31T12:00:00.5+02:00", "2026-01-31T12:00:00"]:
        body = {"events": [event | {"timestamp": when}]}
        assert (await api.http.post("/events", json=body, headers=KEY)).is_success, when
