"""``POST /markets/{market}/recommend``: the hot route, as a plain ASGI layer.

Under load the service's event loop is the scarce resource beside onnxruntime, and
FastAPI's request machinery (routing, dependencies, body validation, response
classes) costs more per request than the route's own work (docs/benchmarks.md). So
this one route answers before FastAPI's router: the body is validated by pydantic
in one step from its JSON bytes, the reply written as two ASGI messages. It sits
inside the app's request metrics and request guard (service/guard.py), like every
other route, and its errors have the same JSON shape. Every other request goes on to
FastAPI.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError
from starlette.datastructures import State
from starlette.exceptions import HTTPException

from service.batching import BatchingScorer
from service.errors import NOT_SERVING, error_body, error_responses, validation_detail
from service.history import HistoryUnavailable
from service.metrics import Metrics
from service.ranking import candidates_for, known_history, popularity_scores, top_k
from service.reloader import Reloader
from service.schemas import RecommendIn, RecommendOut, add_schemas

log = logging.getLogger(__name__)

PATH = "/markets/{market}/recommend"
PATH_PATTERN = re.compile(r"/markets/(?P<market>[^/]+)/recommend")


class NonFiniteScores(Exception):
    """The model scored a candidate NaN or infinite: no ranking to give, and no JSON."""


@dataclass(frozen=True)
class _Route:
    """What the request metrics read from ``scope["route"]``, as for FastAPI's routes."""

    path: str = PATH


class RecommendRoute:
    def __init__(
        self, app: Any, state: State, reloader: Reloader, scorer: BatchingScorer, metrics: Metrics
    ) -> None:
        self.app = app
        self.state = state  # its ``history`` is made in the lifespan
        self.reloader = reloader
        self.scorer = scorer
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        found = PATH_PATTERN.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        market = found["market"]
        scope["route"], scope["path_params"] = _Route(), {"market": market}
        headers: list[tuple[bytes, bytes]] = []
        try:
            if scope["method"] != "POST":
                headers.append((b"allow", b"POST"))
                raise HTTPException(405, "method not allowed; use POST")
            body = RecommendIn.model_validate_json(await _body(receive))
            status, data = 200, _json(await self.recommend(market, body))
        except ValidationError as e:
            status = 422
            data = _error("invalid request", validation_detail(e.errors(), ("body",)))
        except HTTPException as e:
            status, data = e.status_code, _error(e.detail)
        except HistoryUnavailable as e:
            self.metrics.redis_errors.inc()
            status, data = 503, _error("history store unavailable", str(e))
        except NonFiniteScores as e:
            log.error("recommend %s: %s", market, e)
            status, data = 500, _error("model produced non-finite scores")
        except Exception:  # a failed scoring call, a bug: still a JSON reply, and logged
            log.exception("recommend %s failed", market)
            status, data = 500, _error("internal error")
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def recommend(self, market: str, body: RecommendIn) -> dict[str, Any]:
        """The ``RecommendOut`` of one request, as plain JSON values."""
        loaded = self.reloader.loaded  # one version for the whole request, even mid-reload
        if loaded is None:
            raise HTTPException(503, "no model loaded yet")
        model = loaded.markets.get(market)
        if model is None:
            raise HTTPException(404, f"unknown market {market!r}; GET /markets lists them")
        stored = await self.state.history.history(market, body.user_id)
        seen = known_history(loaded.vocabulary, stored, loaded.max_history)
        candidates = candidates_for(
            model, loaded.vocabulary, body.candidates, seen, body.exclude_seen
        )
        if len(seen) == 0 or len(candidates) == 0:
            fallback = "popularity" if len(seen) == 0 else None
            scores = popularity_scores(model, candidates)
        else:
            fallback = None
            scores = await self.scorer.score(model.graph, seen, candidates, model.index)
            self.metrics.candidates.labels(market).inc(len(candidates))
        if not np.isfinite(scores).all():
            bad = int(np.count_nonzero(~np.isfinite(scores)))
            raise NonFiniteScores(f"{bad} of {len(scores)} scores are not finite")
        best, best_scores = top_k(candidates, scores, body.k)
        item = loaded.vocabulary.item
        return {
            "market": market,
            "user_id": body.user_id,
            "items": [
                {"item_id": item(i), "score": s}
                for i, s in zip(best.tolist(), best_scores.tolist(), strict=True)
            ],
            "model_version": loaded.version,
            "variant": loaded.variant,
            "fallback": fallback,
        }


def _json(payload: dict[str, Any]) -> bytes:
    # JSON has no NaN: a non-finite number fails here rather than reach a client as NaN.
    return json.dumps(payload, allow_nan=False).encode()


def _error(error: str, detail: object = None) -> bytes:
    return _json(error_body(error, detail))


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def document(openapi: dict[str, Any]) -> None:
    """Put this route, which FastAPI's router never sees, in an OpenAPI document."""
    add_schemas(openapi, RecommendIn, RecommendOut)

    def body(model: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}

    errors = {
        404: "Unknown market",
        422: "Invalid request body",
        500: "A failed scoring call, or the model produced non-finite scores",
        503: NOT_SERVING,
    }
    openapi["paths"][PATH] = {
        "post": {
            "summary": "Recommend",
            "description": "The user's ranking of the given candidates, or else of the "
            "market's catalogue; the market's popularity for a user without history.",
            "operationId": "recommend",
            "parameters": [
                {"name": "market", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "requestBody": {"required": True, "content": body("RecommendIn")},
            "responses": {
                "200": {"description": "Ranked items", "content": body("RecommendOut")},
                **error_responses(errors),
            },
        }
    }
