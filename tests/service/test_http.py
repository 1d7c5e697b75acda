"""The HTTP contract around the routes: the request guard (API key, Content-Type, body
size and read timeout), error replies and their headers, and /openapi.json."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from benchmarks.processes import free_port, running_service
from model_store.catalogue import load_catalogues
from model_store.store import ModelStore
from model_store.vocab import Vocabulary
from service.batching import BatchingScorer
from service.guard import RequestGuard
from tests.service.conftest import KEY, Api, running, settings

pytestmark = pytest.mark.anyio

RECOMMEND = "/markets/{market}/recommend"
ERROR_OUT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}


def _items(store: ModelStore, market: str) -> list[str]:
    version = store.open()
    vocab = Vocabulary.load(version.file(version.manifest.items))
    catalogue = load_catalogues(version.file(version.manifest.catalogues))[market]
    return [vocab.item(int(i)) for i in catalogue.items]


def _events(*events: tuple[str, str, str]) -> dict[str, Any]:
    """Events of (market, user, event id), all of one item."""
    return {
        "events": [
            {"market": m, "user_id": u, "event_id": e, "item_id": "I00001"} for m, u, e in events
        ]
    }


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


async def test_json_routes_refuse_other_content_types_with_a_json_415(api: Api) -> None:
    body = json.dumps(_events(("aa", "u", "e1"))).encode()
    for content_type in [None, "text/plain", "application/x-www-form-urlencoded", "text/json"]:
        headers = KEY | ({"content-type": content_type} if content_type else {})
        for path in ["/events", "/markets/aa/recommend"]:
            reply = await api.http.post(path, content=body, headers=headers)
            assert reply.status_code == 415, (path, content_type)
            assert reply.json() == {"error": "Content-Type must be application/json"}
    assert await api.app.state.history.history("aa", "u") == []
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
    await RequestGuard(never_called, 1024, api_key=SecretStr("k"))(scope, unread, send)
    assert sent[0]["type"] == "http.response.start"
    return int(sent[0]["status"])


async def test_the_guard_refuses_on_headers_alone() -> None:
    key = {"x-api-key": "k", "content-type": "application/json"}
    assert await _refused_without_reading({"content-length": "5"}) == 401
    assert await _refused_without_reading(key | {"content-length": "1x"}) == 400
    assert await _refused_without_reading(key | {"content-length": "2048"}) == 413
    assert await _refused_without_reading({"x-api-key": "k"}) == 415


async def test_bodies_over_the_limit_are_a_413_declared_or_streamed(
    store: ModelStore, flushed_redis: str
) -> None:
    async with running(settings(store, flushed_redis, max_body_bytes=2048)) as api:
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
    await RequestGuard(never_called, 1024)(scope, receive, send)
    assert sent[0]["status"] == 400  # heard by no one; counted by the request metrics


def _reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):  # socket.timeout if the server holds on
        data += chunk
    return data


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


async def test_non_finite_scores_are_a_logged_json_500(
    api: Api, store: ModelStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    items = _items(store, "aa")
    events = [{"market": "aa", "user_id": "u", "item_id": i} for i in items[:3]]
    assert (await api.http.post("/events", json={"events": events}, headers=KEY)).is_success

    async def poisoned(self: object, graph: object, seen: object, candidates: Any, m: int) -> Any:
        scores = np.linspace(1, 0, len(candidates), dtype=np.float32)
        scores[len(scores) // 2] = np.nan  # ranked in the middle; k = 1 would hide it
        return scores

    monkeypatch.setattr(BatchingScorer, "score", poisoned)
    with caplog.at_level(logging.ERROR, logger="service.recommend"):
        reply = await api.http.post("/markets/aa/recommend", json={"user_id": "u", "k": 1})
    assert reply.status_code == 500
    assert reply.json() == {"error": "model produced non-finite scores"}
    assert "1 of" in caplog.text and "not finite" in caplog.text


async def test_deduplication_is_per_market_user_and_event_id(api: Api) -> None:
    first = _events(("aa", "u1", "e1"), ("aa", "u2", "e1"), ("bb", "u1", "e1"))
    reply = await api.http.post("/events", json=first, headers=KEY)
    assert reply.json()["accepted"] == 3 and reply.json()["duplicates"] == 0
    # A retry after a 503 that stored the events anyway: nothing is stored twice.
    again = await api.http.post("/events", json=first, headers=KEY)
    assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 3
    assert await api.app.state.history.history("aa", "u1") == ["I00001"]
    spec = (await api.http.get("/openapi.json")).json()
    description = spec["paths"]["/events"]["post"]["description"]
    assert "(market, user, event_id)" in description and "same event_ids" in description


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


async def test_the_openapi_document_gives_every_error_each_operation_can_give(api: Api) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    guard = {"400", "408", "413", "500"}
    expected = {
        ("post", "/events"): guard | {"200", "401", "415", "422", "503"},
        ("post", RECOMMEND): guard | {"200", "404", "415", "422", "503"},
        ("post", "/admin/reload"): guard | {"200", "401", "409"},
        ("get", "/markets"): guard | {"200", "503"},
        ("get", "/readyz"): guard | {"200", "503"},
        ("get", "/livez"): guard | {"200"},
        ("get", "/metrics"): guard | {"200"},
    }
    operations = {(m, p): op for p, ops in spec["paths"].items() for m, op in ops.items()}
    assert set(operations) == set(expected)
    for key, operation in operations.items():
        responses = operation["responses"]
        assert set(responses) == expected[key], key
        for status, response in responses.items():
            if status >= "400" and key != ("get", "/readyz"):
                assert response["content"] == ERROR_OUT, (key, status)
        assert ("security" in operation) == (
            key in {("post", "/events"), ("post", "/admin/reload")}
        )
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key"
    }  # fmt: skip
    ready = operations[("get", "/readyz")]["responses"]["503"]["content"]["application/json"]
    assert ready["schema"] == {"$ref": "#/components/schemas/ReadyOut"}
    # /metrics is Prometheus text, documented and served as such.
    metrics = operations[("get", "/metrics")]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert (await api.http.get("/metrics")).headers["content-type"].startswith("text/plain")
    # The markets served are the valid ones; another is a 422 on /events, a 404 here.
    event = spec["components"]["schemas"]["EventIn"]["properties"]["market"]
    assert event["enum"] == ["aa", "bb", "cc"]
    path = operations[("post", RECOMMEND)]["parameters"][0]["schema"]
    assert path["enum"] == ["aa", "bb", "cc"]
    unknown = await api.http.post("/events", json=_events(("zz", "u", "e")), headers=KEY)
    assert unknown.status_code == 422
