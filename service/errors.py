"""The JSON body of every error reply, ``{"error": ..., "detail"?: ...}``, and its
place in /openapi.json (the ``ErrorOut`` schema)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ERROR_SCHEMA = "#/components/schemas/ErrorOut"
NOT_SERVING = "No model loaded yet, or the history store (Redis) not answering"


def error_body(error: str, detail: object = None) -> dict[str, Any]:
    return {"error": error} if detail is None else {"error": error, "detail": detail}


def validation_detail(errors: Sequence[Any], prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """pydantic's errors without their input echo; ``prefix`` says where the checked
    value sits in the request (``("body",)`` for a body validated on its own)."""
    return [{"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors]


def error_responses(reasons: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses, status -> why, each with the error body (keys as FastAPI's)."""
    return {
        str(status): {
            "description": why,
            "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA}}},
        }
        for status, why in reasons.items()
    }
