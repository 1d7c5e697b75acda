"""The request guard (API key, Content-Type, body size, framing) before a route reads a body."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from service.middleware import RequestGuard
from tests.service.conftest import JSON, KEY, Api, events_of, running_fake

pytestmark = pytest.mark.anyio


async def test_json_routes_refuse_other_content_types_with_a_json_415(api: Api) -> None:
    body = json.dumps(events_of(("aa", "u", "e1"))).encode()
    for content_type in [None, "text/plain", "application/x-www-form-urlencoded", "text/json"]:
        headers = KEY | ({"content-type": content_type} if content_type else {})
        for path in ["/events", "/markets/aa/recommend"]:
            reply = await api.http.post(path, content=body, headers=headers)
            assert reply.status_code == 415, (path, content_type)
            assert reply.json() == {"error": "Content-Type must be application/json"}
    assert await api.app.state.resources.history.history("aa", "u") == []
    json_utf8 = KEY | {"content-type": "Application/JSON; charset=utf-8"}
    stored = await api.http.post("/events", content=body, headers=json_utf8)
    assert stored.status_code == 200, stored.text
    ranked = await api.http.post(
        "/markets/aa/recommend", content=b'{"user_id": "u"}', headers=json_utf8
    )
    assert ranked.status_code == 200, ranked.text


async def test_the_api_key_is_checked_before_the_body_is_read(api: Api) -> None:
    malformed = {"content-type": "application/json"}
    for headers in [malformed, malformed | {"X-API-Key": "test-kez"}, {"X-API-Key": ""}]:
        reply = await api.http.post("/events", content=b'{"events": [', headers=headers)
        assert reply.status_code == 401 and reply.json() == {"error": "missing or wrong X-API-Key"}
    assert (await api.http.post("/admin/reload")).status_code == 401
    reply = await api.http.post("/events", content=b'{"events": [', headers=malformed | KEY)
    assert reply.status_code == 422 and reply.json()["error"] == "invalid request"
    assert (await api.http.post("/markets/aa/recommend", json={"user_id": "u"})).is_success


async def _refused_without_reading(headers: dict[str, str]) -> int:
    """The status the guard answers a POST /events with; its body is never read."""

    async def never_called(scope: object, receive: object, send: object) -> None:
        raise AssertionError("the request went past the guard")

    async def unread() -> dict[str, object]:
        raise AssertionError("the guard read the body")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    encoded = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "method": "POST", "path": "/events", "headers": encoded}
    await RequestGuard(never_called, limit=1024, api_key=SecretStr("k"))(scope, unread, send)
    assert sent[0]["type"] == "http.response.start"
    return int(sent[0]["status"])


async def test_the_guard_refuses_on_headers_alone() -> None:
    key = {"x-api-key": "k", "content-type": "application/json"}
    assert await _refused_without_reading({"content-length": "5"}) == 401
    assert await _refused_without_reading(key | {"content-length": "1x"}) == 400
    assert await _refused_without_reading(key | {"content-length": "2048"}) == 413
    assert await _refused_without_reading({"x-api-key": "k"}) == 415


async def test_bodies_over_the_limit_are_a_413_declared_or_streamed(tmp_path: Path) -> None:
    async with running_fake(tmp_path, max_body_bytes=2048) as api:
        body = {"user_id": "u", "candidates": ["x" * 100] * 30}
        reply = await api.http.post("/markets/aa/recommend", json=body)
        assert reply.status_code == 413 and reply.json() == {
            "error": "request body over 2048 bytes"
        }

        async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
            yield b'{"user_id": "u", "candidates": ['
            for _ in range(30):
                yield b'"' + b"x" * 100 + b'",'
            yield b'"x"]}'

        json_type = {"content-type": "application/json"}
        for path in ["/markets/aa/recommend", "/events"]:
            reply = await api.http.post(path, content=streamed(), headers=json_type | KEY)
            assert reply.status_code == 413 and "2048" in reply.json()["error"]


async def test_oversized_bodies_are_refused(tmp_path: Path) -> None:
    async with running_fake(tmp_path, max_body_bytes=2048) as api:
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


async def test_a_client_gone_mid_body_never_reaches_the_route() -> None:
    async def never_called(scope: object, receive: object, send: object) -> None:
        raise AssertionError("the request went past the guard")

    messages = [
        {"type": "http.request", "body": b'{"user_id"', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": "/markets/aa/recommend", "headers": headers}
    await RequestGuard(never_called, limit=1024)(scope, receive, send)
    assert sent[0]["status"] == 400  # heard by no one; counted by the request metrics


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
