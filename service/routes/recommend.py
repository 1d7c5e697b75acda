"""``POST /markets/{market}/recommend``: rank candidates for a user, the hot route.

The path of a request: this route -> the user's history (service/history.py) -> the
batching scorer (service/scorer.py) -> the market's graph (service/graphs.py).

Under load the event loop is the scarce resource beside onnxruntime, and FastAPI's
request machinery (router, exception layers, dependencies, body validation, response
serialization) costs more per request than this route's own work
(docs/benchmarks.md). So the route is an ordinary FastAPI route, documented by
FastAPI from its signature, of the class ``JSONBodyRoute``: pydantic validates the
body from its bytes in one step and the endpoint's plain dict is written as JSON;
the app answers it ahead of the router (``FastRoutes``, service/middleware.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from functools import cached_property
from typing import Any, get_type_hints

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from service.deps import Res, resources_of
from service.errors import (
    HistoryUnavailable,
    InternalError,
    InvalidRequest,
    ModelNotLoaded,
    NonFiniteScores,
    ScorerStopped,
    ScoringFailed,
    ServiceError,
    UnknownMarket,
    documented,
    error_response,
    validation_detail,
)
from service.ranking import rank, reply
from service.schemas import RecommendIn, RecommendOut

log = logging.getLogger(__name__)


class JSONBodyRoute(APIRoute):
    """A route whose endpoint takes its path parameters, ``body`` (a pydantic model)
    and ``resources``, and returns plain JSON values. ``respond`` answers a request,
    its errors included; the app's ``FastRoutes`` layer (service/middleware.py) calls
    it ahead of FastAPI's router, and the router would call it the same way."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.respond

    @cached_property
    def body_model(self) -> type[BaseModel]:
        model: type[BaseModel] = get_type_hints(self.endpoint)["body"]
        return model

    async def respond(self, request: Request) -> Response:
        resources = resources_of(request)
        try:
            body = self.body_model.model_validate_json(await request.body())
        except ValidationError as e:
            invalid = InvalidRequest(detail=validation_detail(e.errors(), ("body",)))
            return error_response(invalid, resources.metrics)
        try:
            reply = await self.endpoint(**request.path_params, body=body, resources=resources)
        except ServiceError as e:
            return error_response(e, resources.metrics)
        except Exception:  # a bug: a logged JSON 500, as the app's handler gives
            log.exception("%s %s failed", request.method, request.url.path)
            return error_response(InternalError(), resources.metrics)
        # JSON has no NaN: a non-finite number fails here rather than reach a client.
        content = json.dumps(reply, allow_nan=False).encode()
        return Response(content, media_type="application/json")


router = APIRouter(route_class=JSONBodyRoute)


@router.post(
    "/markets/{market}/recommend",
    response_model=RecommendOut,
    responses=documented(
        UnknownMarket,
        InvalidRequest,
        ScoringFailed,
        NonFiniteScores,
        ModelNotLoaded,
        HistoryUnavailable,
        ScorerStopped,
    ),
)
async def recommend(market: str, body: RecommendIn, resources: Res) -> dict[str, Any]:
    """The user's ranking of the given candidates, or else of the market's catalogue;
    the market's popularity for a user without history. A new market (CMR_NEW_MARKETS)
    that the served version does not know yet is ranked by every market's popularity."""
    loaded = resources.reloader.serving()  # one version for the whole request, even mid-reload
    ranking = loaded.ranking(market, new_markets=resources.settings.new_markets)
    stored = await resources.history.history(market, body.user_id)
    ranked = await rank(
        loaded, ranking, market=market, stored=stored, candidates=body.candidates, k=body.k,
        exclude_seen=body.exclude_seen, score=resources.scorer.score,
    )  # fmt: skip
    if ranked.fallback is not None:
        resources.metrics.fallbacks.labels(market).inc()
    if ranked.scored:
        resources.metrics.candidates.labels(market).inc(ranked.scored)
    return reply(loaded, ranked, market=market, user_id=body.user_id)
