"""Every failure the service answers with, as one tree: a ``ServiceError`` knows its
HTTP status and its line in /openapi.json; ``error_response`` turns any of them into
the JSON reply ``{"error": ..., "detail"?: ...}`` and its metric.

Outside errors are translated once, where they enter: Redis in service/history.py
(and in service/event_export.py, whose command reports ``ExportFailed``),
onnxruntime in service/graphs.py and service/loading.py, the store in
service/loading.py. Routes raise these; the app's handlers (service/app.py) and the
request guard (service/middleware.py) answer with ``error_response``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, ClassVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from service.metrics import Metrics

ERROR_SCHEMA = "#/components/schemas/ErrorOut"


class ServiceError(Exception):
    """A failure with its status. The message is the reply's ``error``; ``detail`` adds
    structured facts; ``headers`` what the status needs (a 405's Allow)."""

    status: ClassVar[int] = 500
    description: ClassVar[str] = "Internal error"  # its line in /openapi.json

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.description[0].lower() + self.description[1:])
        self.detail = detail
        self.headers = dict(headers or {})


class InternalError(ServiceError):
    """A bug: the reply says no more than this."""


class BadRequest(ServiceError):
    status = 400
    description = "Content-Length is not a number, or the body was cut short"


class Unauthorized(ServiceError):
    status = 401
    description = "Missing or wrong X-API-Key"


class NotFound(ServiceError):
    status = 404
    description = "No such route"


class UnknownMarket(NotFound):
    description = "Unknown market"


class MethodNotAllowed(ServiceError):
    status = 405
    description = "Method not allowed"


class RequestTimeout(ServiceError):
    status = 408
    description = "The request body stopped arriving (CMR_BODY_TIMEOUT_S); the connection is closed"


class VersionRefused(ServiceError):
    """A model version that cannot be served: missing, corrupt, or scoring badly."""

    status = 409
    description = "The current version was refused; the old one serves"


class PayloadTooLarge(ServiceError):
    status = 413
    description = "The request body is over CMR_MAX_BODY_BYTES"


class UnsupportedMediaType(ServiceError):
    status = 415
    description = "Content-Type is not application/json"


class InvalidRequest(ServiceError):
    status = 422
    description = "Invalid request"


class ScoringFailed(ServiceError):
    """onnxruntime failed a scoring call."""

    description = "A scoring call failed"


class NonFiniteScores(ServiceError):
    """The model scored a candidate NaN or infinite: no ranking to give, and no JSON."""

    description = "Model produced non-finite scores"


class ModelNotLoaded(ServiceError):
    status = 503
    description = "No model loaded yet"


class HistoryUnavailable(ServiceError):
    """Redis did not answer in time, or failed."""

    status = 503
    description = "History store unavailable"

    @classmethod
    def because(cls, error: BaseException) -> HistoryUnavailable:
        return cls(detail=f"Redis: {type(error).__name__}: {error}")


class ScorerStopped(ServiceError):
    status = 503
    description = "The service is shutting down"


class ExportFailed(ServiceError):
    """``cmr events export`` cannot go on (Redis unreachable, a file in DEST it did not
    write, a bad ``--since``): a command's failure, never a reply; the command prints it
    as one line."""

    description = "The event export failed"


def error_response(error: ServiceError, metrics: Metrics | None = None) -> JSONResponse:
    """The reply to ``error``, counted where a metric watches its kind."""
    if metrics is not None and isinstance(error, HistoryUnavailable):
        metrics.redis_errors.inc()
    body: dict[str, object] = {"error": str(error)} if error.detail is None else {
        "error": str(error), "detail": error.detail
    }  # fmt: skip
    # JSONResponse refuses NaN (allow_nan=False): no error reply carries one either.
    return JSONResponse(body, error.status, error.headers or None)


def validation_detail(errors: Sequence[Any], prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """pydantic's errors without their input echo; ``prefix`` says where the checked
    value sits in the request (``("body",)`` for a body validated on its own)."""
    return [{"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors]


def documented(*errors: type[ServiceError]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses of an operation that can fail with ``errors``: each
    status with its errors' descriptions and the error body (keys as FastAPI's)."""
    reasons: dict[int, list[str]] = {}
    for error in errors:
        reasons.setdefault(error.status, []).append(error.description)
    return {
        str(status): {
            "description": "; or ".join(why),
            "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA}}},
        }
        for status, why in sorted(reasons.items())
    }


def from_status(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> ServiceError:
    """The error of the tree for a status that Starlette's router answered (404, 405)."""
    kinds: list[type[ServiceError]] = [ServiceError]
    while kinds:
        kind = kinds.pop(0)
        if kind.status == status and kind is not ServiceError:
            return kind(message[0].lower() + message[1:], headers=headers)
        kinds += kind.__subclasses__()
    return InternalError()


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]


def handlers() -> dict[int | type[Exception], Handler]:
    """The app's exception handlers: whatever a route raises, a reply of the tree."""

    async def reply(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ServiceError):
            error = exc
        elif isinstance(exc, HTTPException):  # the router's own: no route, wrong method
            error = from_status(exc.status_code, exc.detail, exc.headers)
        elif isinstance(exc, RequestValidationError):
            error = InvalidRequest(detail=validation_detail(exc.errors()))
        else:
            error = InternalError()  # Starlette logs the exception
        resources = getattr(request.app.state, "resources", None)
        return error_response(error, resources.metrics if resources else None)

    return {
        kind: reply for kind in (ServiceError, HTTPException, RequestValidationError, Exception)
    }
