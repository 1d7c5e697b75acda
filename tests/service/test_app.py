"""The app's own answers: the router's 405s."""

from __future__ import annotations

import pytest

from tests.service.conftest import Api

pytestmark = pytest.mark.anyio


async def test_405_replies_name_the_allowed_methods(api: Api) -> None:
    for method, path, allowed in [
        ("GET", "/events", {"POST"}),
        ("DELETE", "/markets", {"GET"}),
        ("PUT", "/markets/aa/recommend", {"POST"}),
    ]:
        reply = await api.http.request(method, path)
        assert reply.status_code == 405, (method, path)
        assert {m.strip() for m in reply.headers["allow"].split(",")} == allowed
        assert "error" in reply.json()
