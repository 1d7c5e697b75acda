"""The ASGI layers in front of the routes: the request metrics (outermost), the request
guard, then ``FastRoutes``, which answers the hot routes before Starlette's exception
layers and FastAPI's router. Plain ASGI: Starlette's ``BaseHTTPMiddleware`` costs
more per request than the rest of a route.

The guard holds the checks every request passes before any route reads its body. In
order: the API key of protected operations (401), the Content-Length framing (400),
the declared size (413), the Content-Type of the routes that take JSON (415). Then the
body is read here, each part within ``body_timeout_s`` (else 408, and the connection
closed) and all of it within ``limit`` bytes (413), and handed on as one message. So a
refused client never gets its body read or parsed, and a client that stops sending
holds a connection for ``body_timeout_s``, not until the server's own timeouts.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    Unauthorized,
    UnsupportedMediaType,
    documented,
    error_response,
)

KEY_HEADER = "X-API-Key"
_SCHEME = "ApiKey"
_JSON_PATHS = re.compile(r"/events|/markets/[^/]+/recommend")  # POST bodies of JSON


class RequestMetrics:
    """Counts requests by route template, market and status, and times them."""

    def __init__(self, app: Any) -> None:
        self.app = app

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
            resources = getattr(scope["app"].state, "resources", None)  # made in the lifespan
            if resources is not None:
                path = getattr(scope.get("route"), "path", "unmatched")
                market = scope.get("path_params", {}).get("market", "")
                loaded = resources.reloader.loaded
                known = loaded is not None and market in loaded.markets
                if market and not known and market not in resources.settings.new_markets:
                    market = "unknown"  # never a label value a client can invent
                metrics = resources.metrics
                metrics.requests.labels(path, market, str(status)).inc()
                metrics.latency.labels(path, market).observe(time.perf_counter() - start)


class FastRoute(Protocol):
    """A FastAPI route that answers a request, errors included, without the router
    (``path`` names it in the request metrics)."""

    @property
    def path(self) -> str: ...

    @property
    def path_regex(self) -> re.Pattern[str]: ...

    @property
    def methods(self) -> set[str] | None: ...

    async def respond(self, request: Request) -> Response: ...


class FastRoutes:
    """Answers requests for ``routes`` (FastAPI's own route objects, documented by it)
    straight away; every other request, or another method, goes on to the router."""

    def __init__(self, app: Any, *, routes: Sequence[FastRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                found = route.path_regex.match(scope["path"])
                if found is not None and scope["method"] in (route.methods or ()):
                    scope["route"], scope["path_params"] = route, found.groupdict()
                    response = await route.respond(Request(scope, receive))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def needs_key(method: str, path: str) -> bool:
    """The operations that change state: POST /events and everything under /admin/."""
    return (method == "POST" and path == "/events") or path.startswith("/admin/")


def takes_json(method: str, path: str) -> bool:
    return method == "POST" and _JSON_PATHS.fullmatch(path) is not None


def _is_json(content_type: bytes | None) -> bool:
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    return media == b"application/json"


class RequestGuard:
    """Outside the routes, inside the request metrics; ``api_key`` None: no key needed."""

    def __init__(
        self,
        app: Any,
        *,
        limit: int,
        body_timeout_s: float = 10.0,
        api_key: SecretStr | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.body_timeout_s = body_timeout_s
        self.key = api_key.get_secret_value().encode() if api_key is not None else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        outcome = self._refusal(scope) or await self._read(receive)
        if isinstance(outcome, bytes):
            await self.app(scope, _replay(outcome, receive), send)
        else:
            await outcome(scope, receive, send)

    def _refusal(self, scope: Any) -> JSONResponse | None:
        """The answer to a request its headers alone refuse, else None."""
        method, path = scope["method"], scope["path"]
        headers = dict(scope["headers"])
        if self.key is not None and needs_key(method, path):
            given = headers.get(KEY_HEADER.lower().encode(), b"")
            if not hmac.compare_digest(given, self.key):  # constant time
                return error_response(Unauthorized(f"missing or wrong {KEY_HEADER}"))
        declared = headers.get(b"content-length")
        if declared is not None and not declared.isdigit():
            return error_response(BadRequest("content-length is not a number"))
        if declared is not None and int(declared) > self.limit:
            return error_response(PayloadTooLarge(f"request body over {self.limit} bytes"))
        if takes_json(method, path) and not _is_json(headers.get(b"content-type")):
            return error_response(UnsupportedMediaType("Content-Type must be application/json"))
        return None

    async def _read(self, receive: Any) -> bytes | JSONResponse:
        """The whole body, or the refusal of a slow, oversized or abandoned one."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                # Connection: close makes uvicorn drop the connection and its unread body.
                timeout = f"request body incomplete after {self.body_timeout_s:g} s"
                return error_response(RequestTimeout(timeout, headers={"connection": "close"}))
            if message["type"] == "http.disconnect":  # nobody hears it; the metrics count it
                gone = "the client went away before its request body ended"
                return error_response(BadRequest(gone))
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return error_response(PayloadTooLarge(f"request body over {self.limit} bytes"))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives the body read, then what the client does next (disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Any:
        return pending.pop() if pending else await receive()

    return replayed


def document(schema: dict[str, Any]) -> None:
    """Add what the guard answers to every operation of an OpenAPI ``schema``."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[_SCHEME] = {"type": "apiKey", "in": "header", "name": KEY_HEADER}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            method = method.upper()
            errors: list[type[ServiceError]] = [BadRequest, RequestTimeout, PayloadTooLarge]
            if needs_key(method, path):
                operation["security"] = [{_SCHEME: []}]
                errors.append(Unauthorized)
            if takes_json(method, path):
                errors.append(UnsupportedMediaType)
            responses = operation.setdefault("responses", {}) | documented(*errors)
            operation["responses"] = dict(sorted(responses.items()))
