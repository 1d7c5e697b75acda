"""The HTTP API: thin routes over the history store, the batching scorer and the reloader.

The recommend route, the hot one, is a plain ASGI layer (service/recommend.py) that
FastAPI's router never sees; this module puts it in place and in /openapi.json.

Every error is JSON ``{"error": ..., "detail"?: ...}``. Redis trouble is a 503 within
``redis_timeout_s``; no model loaded is a 503; bad input is a 4xx naming the problem.
"""

from __future__ import annotations

import hmac
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from redis import asyncio as aioredis
from starlette.exceptions import HTTPException

from service.batching import BatchingScorer
from service.errors import error_body, validation_detail
from service.graphs import LoadedVersion
from service.history import Event, HistoryStore, HistoryUnavailable
from service.metrics import Metrics
from service.recommend import PATH, RecommendRoute
from service.reloader import Reloader
from service.schemas import (
    ErrorOut,
    EventsIn,
    EventsOut,
    MarketOut,
    MarketsOut,
    RecommendIn,
    RecommendOut,
)
from service.settings import Settings

log = logging.getLogger(__name__)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes (413), declared or streamed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            response = JSONResponse({"error": "content-length is not a number"}, 400)
            await response(scope, receive, send)
            return
        if declared is not None and int(declared) > self.limit:
            response = JSONResponse({"error": f"request body over {self.limit} bytes"}, 413)
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, counted, send)


class RequestMetrics:
    """Counts requests by route template, market and status, and times them (plain ASGI:
    Starlette's ``BaseHTTPMiddleware`` costs more per request than the rest of a route)."""

    def __init__(self, app: Any, metrics: Metrics, reloader: Reloader) -> None:
        self.app = app
        self.metrics = metrics
        self.reloader = reloader

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            market = scope.get("path_params", {}).get("market", "")
            loaded = self.reloader.loaded
            if market and (loaded is None or market not in loaded.markets):
                market = "unknown"  # never a label value a client can invent
            self.metrics.requests.labels(path, market, str(status)).inc()
            self.metrics.latency.labels(path, market).observe(time.perf_counter() - start)


async def _history(request: Request) -> HistoryStore:
    store: HistoryStore = request.app.state.history
    return store


async def _loaded(request: Request) -> LoadedVersion:
    loaded: LoadedVersion | None = request.app.state.reloader.loaded
    if loaded is None:
        raise HTTPException(503, "no model loaded yet")
    return loaded


async def _api_key(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Constant-time check of the X-API-Key header, when a key is configured."""
    key: SecretStr | None = request.app.state.settings.api_key
    if key is None:
        return
    if not hmac.compare_digest((x_api_key or "").encode(), key.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key")


# The dependencies are ``async``: FastAPI would run plain functions in a thread pool,
# a thread hop per dependency per request.
History = Annotated[HistoryStore, Depends(_history)]
Loaded = Annotated[LoadedVersion, Depends(_loaded)]


def _utc(when: datetime | None) -> datetime | None:
    """Timestamps without a zone are read as UTC, so all of them compare."""
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()
    reloader = Reloader(settings, metrics)
    scorer = BatchingScorer(
        metrics,
        settings.max_batch_rows,
        settings.max_wait_ms / 1000,
        settings.batching,
        settings.scoring_workers,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        app.state.history = HistoryStore(
            client, settings.history_length, settings.dedup_ttl_s, settings.redis_timeout_s
        )
        try:
            await reloader.reload()
        except Exception as e:  # serve nothing yet; /readyz says so, polling retries
            log.warning("no model loaded at start: %s", e)
        await scorer.start()
        reloader.start()
        # A scoring thread whose call returned waits for the GIL until the event loop
        # lets go of it, by default up to 5 ms: long beside a call of about 10 ms.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(settings.switch_interval_ms / 1000)
        try:
            yield
        finally:
            sys.setswitchinterval(switch)
            await reloader.stop()
            await scorer.stop()
            await client.aclose()

    app = FastAPI(
        title="Cross-market recommendation service",
        lifespan=lifespan,
        responses={"default": {"description": "Error: {error, detail?}"}},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.reloader = reloader

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.detail), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = validation_detail(exc.errors())
        return JSONResponse(error_body("invalid request", detail), status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("internal error"), 500)  # Starlette logs it

    @app.exception_handler(HistoryUnavailable)
    async def redis_down(request: Request, exc: HistoryUnavailable) -> JSONResponse:
        metrics.redis_errors.inc()
        return JSONResponse(error_body("history store unavailable", str(exc)), 503)

    @app.post("/events", dependencies=[Depends(_api_key)])
    async def post_events(body: EventsIn, history: History, loaded: Loaded) -> EventsOut:
        unknown_markets = sorted({e.market for e in body.events} - set(loaded.markets))
        if unknown_markets:
            raise HTTPException(422, f"unknown market(s): {', '.join(unknown_markets)}")
        events = [
            Event(e.market, e.user_id, e.item_id, e.event_id, _utc(e.timestamp))
            for e in body.events
        ]
        counts = await history.append(events)
        unknown = 0
        for e in events:
            if e.item_id not in loaded.vocabulary:
                unknown += 1
                metrics.unknown_items.labels(e.market).inc()
        for market, (accepted, duplicates) in counts.items():
            metrics.events.labels(market).inc(accepted)
            metrics.duplicates.labels(market).inc(duplicates)
        return EventsOut(
            accepted=sum(a for a, _ in counts.values()),
            duplicates=sum(d for _, d in counts.values()),
            unknown_items=unknown,
        )

    @app.get("/markets")
    async def markets(loaded: Loaded) -> MarketsOut:
        return MarketsOut(
            markets=[
                MarketOut(
                    market=m.code,
                    graph=m.graph.name,
                    own_parameters=m.own_parameters,
                    catalogue_size=len(m.catalogue),
                )
                for m in loaded.markets.values()
            ]
        )

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz(history: History) -> JSONResponse:
        loaded = reloader.loaded
        redis_ok = await history.ping()
        body = {
            "model": loaded.version if loaded else None,
            "variant": loaded.variant if loaded else None,
            "provider": loaded.provider if loaded else None,
            "redis": "ok" if redis_ok else "unavailable",
        }
        ready = loaded is not None and redis_ok
        return JSONResponse(
            {"status": "ready" if ready else "not ready", **body}, 200 if ready else 503
        )

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", dependencies=[Depends(_api_key)])
    async def admin_reload() -> JSONResponse:
        try:
            loaded = await reloader.reload(force=True)
        except Exception as e:
            served = reloader.loaded.version if reloader.loaded else None
            return JSONResponse(
                {"error": f"reload refused: {e}", "detail": {"serving": served}}, 409
            )
        return JSONResponse({"serving": loaded.version, "variant": loaded.variant})

    # The first added is the innermost: the hot route sits inside the body limit and
    # the request metrics, and answers before FastAPI's router.
    app.add_middleware(
        RecommendRoute, state=app.state, reloader=reloader, scorer=scorer, metrics=metrics
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics, reloader=reloader)
    _document_recommend(app)
    return app


def _document_recommend(app: FastAPI) -> None:
    """Put the hot route, which FastAPI's router never sees, in /openapi.json."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        ref = "#/components/schemas/{model}"
        for model in (RecommendIn, RecommendOut, ErrorOut):
            found = model.model_json_schema(ref_template=ref)
            components.update(found.pop("$defs", {}))
            components[model.__name__] = found

        def body(model: str) -> dict[str, Any]:
            return {"application/json": {"schema": {"$ref": ref.format(model=model)}}}

        schema["paths"][PATH] = {
            "post": {
                "summary": "Recommend",
                "description": "The user's ranking of the given candidates, or else of the "
                "market's catalogue; the market's popularity for a user without history.",
                "parameters": [
                    {"name": "market", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {"required": True, "content": body("RecommendIn")},
                "responses": {
                    "200": {"description": "Ranked items", "content": body("RecommendOut")},
                    "default": {"description": "Error", "content": body("ErrorOut")},
                },
            }
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
