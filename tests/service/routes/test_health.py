"""GET /markets, /livez, /readyz and /metrics on fakes."""

from __future__ import annotations

import pytest

from tests.service.conftest import Api

pytestmark = pytest.mark.anyio


async def test_markets_health_and_metrics(api: Api) -> None:
    markets = (await api.http.get("/markets")).json()["markets"]
    # One graph for every market, each with parameters of its own.
    assert {m["market"]: (m["graph"], m["own_parameters"]) for m in markets} == {
        "aa": ("model.onnx", True),
        "bb": ("model.onnx", True),
        "cc": ("model.onnx", True),
    }
    assert all(m["catalogue_size"] == len(api.catalogue(m["market"])) for m in markets)
    assert (await api.http.get("/livez")).json() == {"status": "alive"}
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() | {} == {
        "status": "ready",
        "model": "tiny-1",
        "variant": "hybrid",
        "provider": "cpu",
        "redis": "ok",
    }
    await api.post_history("aa", "secret-user-id", api.catalogue("aa")[:2])
    await api.http.post("/markets/aa/recommend", json={"user_id": "secret-user-id"})
    text = (await api.http.get("/metrics")).text
    for name in [
        "cmr_requests_total",
        "cmr_request_seconds_bucket",
        "cmr_batch_requests_bucket",
        "cmr_batch_candidate_rows_bucket",
        "cmr_queue_wait_seconds_bucket",
        "cmr_inference_seconds_bucket",
        "cmr_candidates_scored_total",
        "cmr_events_ingested_total",
        "cmr_redis_errors_total",
        "cmr_model_reloads_total",
        'cmr_model_info{provider="cpu",variant="hybrid",version="tiny-1"} 1.0',
    ]:
        assert name in text, name
    assert "secret-user-id" not in text
    assert 'route="/markets/{market}/recommend"' in text
