"""The error tree: statuses, reply bodies, the metric, and the OpenAPI lines."""

from __future__ import annotations

import json

from service.errors import (
    HistoryUnavailable,
    MethodNotAllowed,
    ModelNotLoaded,
    NotFound,
    ServiceError,
    documented,
    error_response,
    from_status,
)
from service.metrics import Metrics


def test_an_error_replies_with_its_status_body_and_headers() -> None:
    reply = error_response(MethodNotAllowed("use POST", headers={"allow": "POST"}))
    assert reply.status_code == 405 and reply.headers["allow"] == "POST"
    assert json.loads(reply.body) == {"error": "use POST"}
    reply = error_response(ModelNotLoaded())
    assert reply.status_code == 503 and json.loads(reply.body) == {"error": "no model loaded yet"}


def test_a_redis_failure_is_counted_and_says_why() -> None:
    metrics = Metrics()
    error = HistoryUnavailable.because(TimeoutError("no answer"))
    reply = error_response(error, metrics)
    assert json.loads(reply.body) == {
        "error": "history store unavailable",
        "detail": "Redis: TimeoutError: no answer",
    }
    assert metrics.redis_errors._value.get() == 1


def test_the_routers_statuses_map_into_the_tree() -> None:
    assert type(from_status(404, "Not Found")) is NotFound
    allowed = from_status(405, "Method Not Allowed", {"allow": "GET"})
    assert isinstance(allowed, MethodNotAllowed) and allowed.headers == {"allow": "GET"}
    assert from_status(418, "teapot").status == 500
    assert isinstance(allowed, ServiceError)


def test_errors_of_one_status_share_one_documented_line() -> None:
    responses = documented(ModelNotLoaded, HistoryUnavailable, NotFound)
    assert list(responses) == ["404", "503"]
    assert responses["503"]["description"] == "No model loaded yet; or History store unavailable"
