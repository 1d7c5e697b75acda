"""/openapi.json: every operation with every error it can give."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.conftest import ERROR_OUT, KEY, RECOMMEND, Api, events_of, running_fake

pytestmark = pytest.mark.anyio


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
    unknown = await api.http.post("/events", json=events_of(("zz", "u", "e")), headers=KEY)
    assert unknown.status_code == 422


async def test_the_recommend_route_is_documented(api: Api) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    post = spec["paths"]["/markets/{market}/recommend"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/RecommendIn"}
    assert {"RecommendIn", "RecommendOut", "ScoredItem", "ErrorOut"} <= set(
        spec["components"]["schemas"]
    )


async def test_new_markets_are_valid_markets_in_the_document(tmp_path: Path) -> None:
    async with running_fake(tmp_path, new_markets="dd,aa") as api:
        spec = (await api.http.get("/openapi.json")).json()
    event = spec["components"]["schemas"]["EventIn"]["properties"]["market"]
    path = spec["paths"][RECOMMEND]["post"]["parameters"][0]["schema"]
    assert event["enum"] == path["enum"] == ["aa", "bb", "cc", "dd"]
