"""The JSON body of every error reply: ``{"error": ..., "detail"?: ...}``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def error_body(error: str, detail: object = None) -> dict[str, Any]:
    return {"error": error} if detail is None else {"error": error, "detail": detail}


def validation_detail(errors: Sequence[Any], prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """pydantic's errors without their input echo; ``prefix`` says where the checked
    value sits in the request (``("body",)`` for a body validated on its own)."""
    return [{"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors]
