"""The HTTP API: thin routes over the history store, the batching scorer and the reloader.

The recommend route, the hot one, is a plain ASGI layer (service/recommend.py) that
FastAPI's router never sees, and the checks that come before any body is read (API
key, Content-Type, size, read timeout) are another (service/guard.py); this module
puts them in place and in /openapi.json, with every error each operation can give.

Every error is JSON ``{"error": ..., "detail"?: ...}``. Redis trouble is a 503 within
``redis_timeout_s``; no model loaded is a 503; bad input is a 4xx naming the problem.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from service import guard, recommend, redis_client
from service.batching import BatchingScorer
from service.errors import NOT_SERVING, error_body, error_responses, validation_detail
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
    ReadyOut,
    ReloadOut,
    add_schemas,
)
from service.settings import Settings

log = logging.getLogger(__name__)


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
        client = redis_client.connect(
            settings.redis_url, settings.redis_timeout_s, cluster=settings.redis_cluster
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
        responses=error_responses({500: "Internal error"}),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.reloader = reloader

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # The headers carry what the status needs, e.g. a 405's Allow.
        return JSONResponse(error_body(exc.detail), exc.status_code, exc.headers)

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

    @app.post(
        "/events",
        responses=error_responses(
            {422: "Invalid events, or a market the model does not serve", 503: NOT_SERVING}
        ),
    )
    async def post_events(body: EventsIn, history: History, loaded: Loaded) -> EventsOut:
        """Append events to their users' histories, once Redis acknowledged them.

        De-duplication is per (market, user, event_id), for CMR_DEDUP_TTL_S; events
        without an event_id are never duplicates. A 503 (Redis not answering in time)
        may still have stored some or all of the events: retry with the same event_ids,
        which is safe, as the stored ones count as duplicates."""
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

    @app.get("/markets", responses=error_responses({503: "No model loaded yet"}))
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

    @app.get(
        "/readyz",
        response_model=ReadyOut,
        responses={503: {"model": ReadyOut, "description": "Not ready: no model, or no Redis"}},
    )
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

    @app.get("/metrics", response_class=PlainTextResponse)  # documented as text, as served
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/admin/reload",
        response_model=ReloadOut,
        responses=error_responses({409: "The current version was refused; the old one serves"}),
    )
    async def admin_reload() -> JSONResponse:
        try:
            loaded = await reloader.reload(force=True)
        except Exception as e:
            served = reloader.loaded.version if reloader.loaded else None
            return JSONResponse(
                {"error": f"reload refused: {e}", "detail": {"serving": served}}, 409
            )
        return JSONResponse({"serving": loaded.version, "variant": loaded.variant})

    # The first added is the innermost: the hot route sits inside the guard and the
    # request metrics, and answers before FastAPI's router.
    app.add_middleware(
        RecommendRoute, state=app.state, reloader=reloader, scorer=scorer, metrics=metrics
    )
    app.add_middleware(
        guard.RequestGuard,
        limit=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        api_key=settings.api_key,
    )
    app.add_middleware(RequestMetrics, metrics=metrics, reloader=reloader)
    _document(app, reloader)
    return app


def _document(app: FastAPI, reloader: Reloader) -> None:
    """/openapi.json: FastAPI's routes, the recommend route, what the guard answers, and
    the markets of the version served (so an unknown market is invalid input there)."""
    generate = app.openapi  # FastAPI's; it keeps the first it made
    made: dict[tuple[str, ...], dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        loaded = reloader.loaded
        markets = tuple(sorted(loaded.markets)) if loaded is not None else ()
        if markets not in made:
            schema = copy.deepcopy(generate())
            add_schemas(schema, ErrorOut)
            recommend.document(schema)
            guard.document(schema)
            if markets:
                described = {"enum": list(markets), "description": "A market served now"}
                schema["components"]["schemas"]["EventIn"]["properties"]["market"] |= described
                market = schema["paths"][PATH]["post"]["parameters"][0]["schema"]
                market |= described
            made.clear()  # only the version served now
            made[markets] = schema
        return made[markets]

    app.openapi = openapi  # type: ignore[method-assign]
